// promcheck: what the chart's monitoring tests need from Prometheus's own Go packages.
//
//	promcheck rules FILE...   what `promtool check rules` does: rulefmt.ParseFile (YAML shape,
//	                          unique group names, PromQL syntax, label and annotation templates,
//	                          UTF-8 name validation) and its duplicate-rules lint (two rules with
//	                          the same name and labels); prints "FILE: N rules" per file, exit 1
//	                          with the errors otherwise.
//	promcheck selectors       read a JSON array of PromQL expressions on stdin; print, per
//	                          expression, every vector selector with its metric name, label
//	                          matchers, and the labels the expression groups or matches on
//	                          above it (by/without, on/ignoring), as JSON. Exit 1 when an
//	                          expression does not parse.
//
// Built from github.com/prometheus/prometheus (model/rulefmt, promql/parser) by .ci/promcheck.sh.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/common/promslog"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

type matcher struct {
	Name  string `json:"name"`
	Type  string `json:"type"`
	Value string `json:"value"`
}

type selector struct {
	Metric   string    `json:"metric"`
	Matchers []matcher `json:"matchers"`
	// Labels named by an enclosing aggregation's by/without or a binary operation's on/ignoring.
	Grouping []string `json:"grouping"`
}

type result struct {
	Expr      string     `json:"expr"`
	Selectors []selector `json:"selectors"`
}

func checkRules(files []string) int {
	failed := 0
	for _, f := range files {
		groups, errs := rulefmt.ParseFile(f, false, model.UTF8Validation, parser.NewParser(parser.Options{}), promslog.NewNopLogger())
		if len(errs) > 0 {
			failed++
			for _, err := range errs {
				fmt.Fprintf(os.Stderr, "%s: %v\n", f, err)
			}
			continue
		}
		n := 0
		seen := map[string]bool{}
		var duplicates []string
		for _, g := range groups.Groups {
			for _, r := range g.Rules {
				n++
				name := r.Alert + r.Record
				key := name + "{" + labelKey(g.Labels, r.Labels) + "}"
				if seen[key] {
					duplicates = append(duplicates, key)
				}
				seen[key] = true
			}
		}
		if len(duplicates) > 0 {
			failed++
			fmt.Fprintf(os.Stderr, "%s: %d duplicate rule(s) found: %s\n", f, len(duplicates), strings.Join(duplicates, ", "))
			continue
		}
		fmt.Printf("%s: %d rules\n", f, n)
	}
	if failed > 0 {
		return 1
	}
	return 0
}

// labelKey: the group's labels overridden by the rule's, sorted (promtool's rules.FromMaps).
func labelKey(maps ...map[string]string) string {
	merged := map[string]string{}
	for _, m := range maps {
		for k, v := range m {
			merged[k] = v
		}
	}
	keys := make([]string, 0, len(merged))
	for k := range merged {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%q", k, merged[k]))
	}
	return strings.Join(parts, ",")
}

func selectors(exprs []string) ([]result, error) {
	p := parser.NewParser(parser.Options{})
	out := make([]result, 0, len(exprs))
	for _, e := range exprs {
		expr, err := p.ParseExpr(e)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", e, err)
		}
		res := result{Expr: e, Selectors: []selector{}}
		parser.Inspect(expr, func(node parser.Node, path []parser.Node) error {
			vs, ok := node.(*parser.VectorSelector)
			if !ok {
				return nil
			}
			s := selector{Metric: vs.Name, Matchers: []matcher{}, Grouping: []string{}}
			for _, m := range vs.LabelMatchers {
				if m.Name == labels.MetricName {
					continue
				}
				s.Matchers = append(s.Matchers, matcher{Name: m.Name, Type: m.Type.String(), Value: m.Value})
			}
			for _, anc := range path {
				switch a := anc.(type) {
				case *parser.AggregateExpr:
					s.Grouping = append(s.Grouping, a.Grouping...)
				case *parser.BinaryExpr:
					if a.VectorMatching != nil {
						s.Grouping = append(s.Grouping, a.VectorMatching.MatchingLabels...)
					}
				}
			}
			res.Selectors = append(res.Selectors, s)
			return nil
		})
		out = append(out, res)
	}
	return out, nil
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: promcheck rules FILE... | promcheck selectors < exprs.json")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "rules":
		os.Exit(checkRules(os.Args[2:]))
	case "selectors":
		var exprs []string
		if err := json.NewDecoder(os.Stdin).Decode(&exprs); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		res, err := selectors(exprs)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	default:
		fmt.Fprintln(os.Stderr, "unknown command", os.Args[1])
		os.Exit(2)
	}
}
