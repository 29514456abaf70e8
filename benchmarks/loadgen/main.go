// bench-loadgen: an open-loop HTTP/1.1 load generator with latency percentiles, for the
// benchmark (benchmarks/run.py). Standard library only.
//
// Why not vegeta: on the one core the benchmark gives the load generator, vegeta (net/http
// client, ~50-60 µs of CPU per request) shows p99 > 100 ms by itself from about 10,000
// requests/s against a trivial Go server, i.e. right where the HTTP ceiling is; this tool writes
// pre-serialised requests on keep-alive connections and parses only the status line and
// Content-Length (~10 µs per request), so it stays far below its own limits.
//
// Usage:
//
//	bench-loadgen -addr 127.0.0.1:8080 -requests FILE -rate 1000 -duration 5s \
//	    [-max-conns 1000] [-timeout 10s] [-status-out FILE]
//
// FILE holds the requests to send, in order, each as a 4-byte big-endian length followed by the
// raw HTTP/1.1 request (request line, headers, body). Request i is due at start + i/rate
// (open loop: it is sent then whatever happened to earlier requests; a request that finds no
// idle connection gets a new one, up to -max-conns, beyond which it waits for one). Latency is
// measured from the moment a connection takes the request (its write, after a dial if the
// connection is new) to the end of its response (latency_ms, what vegeta and wrk report), and
// from its due time (latency_from_due_ms, which adds the generator's own lag, about 1 ms of
// timer granularity, and any wait for a free connection, so nothing hides behind coordinated
// omission); send_lag_ms shows how late requests were taken. The summary (JSON) goes to stdout; -status-out writes one little-endian int16 per request: its HTTP
// status, 0 for a transport error or timeout, -1 when not sent.
package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

type summary struct {
	Requests    int                `json:"requests"`
	Completed   int                `json:"completed"`
	StatusCodes map[string]int     `json:"status_codes"`
	Errors      map[string]int     `json:"errors"`
	LatencyMs   map[string]float64 `json:"latency_ms"`
	FromDueMs   map[string]float64 `json:"latency_from_due_ms"`
	SendLagMs   map[string]float64 `json:"send_lag_ms"`
	SentRate    float64            `json:"sent_rate"`
	Throughput  float64            `json:"throughput"`
	DurationS   float64            `json:"duration_s"`
	ConnsOpened int64              `json:"conns_opened"`
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "host:port")
	file := flag.String("requests", "", "requests file")
	rate := flag.Float64("rate", 100, "requests per second")
	duration := flag.Duration("duration", 5*time.Second, "duration")
	maxConns := flag.Int64("max-conns", 1000, "most connections")
	timeout := flag.Duration("timeout", 10*time.Second, "per-request timeout")
	statusOut := flag.String("status-out", "", "per-request status file")
	flag.Parse()

	data, err := os.ReadFile(*file)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var offs []int
	for p := 0; p+4 <= len(data); {
		n := int(binary.BigEndian.Uint32(data[p:]))
		offs = append(offs, p+4)
		p += 4 + n
	}
	n := int(*rate * duration.Seconds())
	if n > len(offs) {
		fmt.Fprintf(os.Stderr, "only %d requests in the file, %d needed\n", len(offs), n)
		os.Exit(2)
	}
	reqAt := func(i int) []byte {
		o := offs[i]
		return data[o : o+int(binary.BigEndian.Uint32(data[o-4:]))]
	}

	status := make([]int16, n)
	for i := range status {
		status[i] = -1
	}
	lat := make([]int64, n)  // ns from taking the request to the end of its response
	dlat := make([]int64, n) // ns from its due time to the end of its response
	lag := make([]int64, n)  // ns from its due time to taking it
	errKinds := make([]uint8, n)
	errNames := []string{"", "connect", "write", "read", "timeout", "bad response"}

	work := make(chan int, n)
	var idle, conns, opened atomic.Int64
	var wg sync.WaitGroup
	start := time.Now().Add(20 * time.Millisecond)
	interval := float64(time.Second) / *rate
	due := func(i int) time.Time { return start.Add(time.Duration(float64(i) * interval)) }

	worker := func() {
		defer wg.Done()
		defer conns.Add(-1)
		var c net.Conn
		var br *bufio.Reader
		fail := func(i int, kind uint8, e error) {
			status[i], errKinds[i] = 0, kind
			if ne, ok := e.(net.Error); ok && ne.Timeout() {
				errKinds[i] = 4
			}
			dlat[i] = int64(time.Since(due(i)))
			lat[i] = dlat[i] - lag[i]
			if c != nil {
				c.Close()
				c = nil
			}
		}
		for {
			idle.Add(1)
			i, ok := <-work
			idle.Add(-1)
			if !ok {
				break
			}
			lag[i] = int64(time.Since(due(i)))
			if c == nil {
				var e error
				c, e = net.DialTimeout("tcp", *addr, *timeout)
				if e != nil {
					c = nil
					fail(i, 1, e)
					continue
				}
				opened.Add(1)
				c.(*net.TCPConn).SetNoDelay(true)
				br = bufio.NewReaderSize(c, 16<<10)
			}
			c.SetDeadline(time.Now().Add(*timeout))
			if _, e := c.Write(reqAt(i)); e != nil {
				fail(i, 2, e)
				continue
			}
			code, keep, e := readResponse(br)
			if e != nil {
				kind := uint8(3)
				if e == errBadResponse {
					kind = 5
				}
				fail(i, kind, e)
				continue
			}
			dlat[i] = int64(time.Since(due(i)))
			lat[i] = dlat[i] - lag[i]
			status[i] = int16(code)
			if !keep {
				c.Close()
				c = nil
			}
		}
		if c != nil {
			c.Close()
		}
	}
	spawn := func() {
		conns.Add(1)
		wg.Add(1)
		go worker()
	}
	for k := 0; k < 8; k++ {
		spawn()
	}
	time.Sleep(time.Until(start))
	firstSend := time.Now()
	for i := 0; i < n; i++ {
		if d := time.Until(due(i)); d > 0 {
			time.Sleep(d)
		}
		work <- i
		if idle.Load() <= 0 && conns.Load() < *maxConns {
			spawn()
		}
	}
	lastSend := time.Now()
	close(work)
	wg.Wait()
	end := time.Now()

	s := summary{Requests: n, StatusCodes: map[string]int{}, Errors: map[string]int{}}
	lats, dlats, lags := lat[:0:0], dlat[:0:0], lag[:0:0]
	for i := 0; i < n; i++ {
		switch {
		case status[i] > 0:
			s.Completed++
			s.StatusCodes[strconv.Itoa(int(status[i]))]++
		case status[i] == 0:
			s.Errors[errNames[errKinds[i]]]++
		default:
			continue
		}
		lats, dlats, lags = append(lats, lat[i]), append(dlats, dlat[i]), append(lags, lag[i])
	}
	s.LatencyMs = pct(lats)
	s.FromDueMs = pct(dlats)
	s.SendLagMs = pct(lags)
	if sp := lastSend.Sub(firstSend).Seconds(); sp > 0 && n > 1 {
		s.SentRate = float64(n-1) / sp
	}
	s.DurationS = end.Sub(firstSend).Seconds()
	s.Throughput = float64(s.StatusCodes["200"]) / s.DurationS
	s.ConnsOpened = opened.Load()
	if *statusOut != "" {
		buf := make([]byte, 2*n)
		for i, v := range status {
			binary.LittleEndian.PutUint16(buf[2*i:], uint16(v))
		}
		if err := os.WriteFile(*statusOut, buf, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
	out, _ := json.Marshal(s)
	fmt.Println(string(out))
}

func pct(v []int64) map[string]float64 {
	m := map[string]float64{}
	if len(v) == 0 {
		return m
	}
	sort.Slice(v, func(a, b int) bool { return v[a] < v[b] })
	at := func(q float64) float64 {
		k := int(q*float64(len(v))+0.5) - 1
		if k < 0 {
			k = 0
		}
		if k >= len(v) {
			k = len(v) - 1
		}
		return float64(v[k]) / 1e6
	}
	var sum float64
	for _, x := range v {
		sum += float64(x)
	}
	m["p50"], m["p90"], m["p95"], m["p99"], m["p999"] = at(0.50), at(0.90), at(0.95), at(0.99), at(0.999)
	m["max"], m["mean"] = float64(v[len(v)-1])/1e6, sum/float64(len(v))/1e6
	return m
}

var errBadResponse = fmt.Errorf("bad response")

// readResponse reads one HTTP/1.1 response: status code, whether the connection stays open.
func readResponse(br *bufio.Reader) (int, bool, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return 0, false, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, false, errBadResponse
	}
	code, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, false, errBadResponse
	}
	keep := line[7] == '1'
	length, chunked := -1, false
	for {
		h, err := br.ReadSlice('\n')
		if err != nil {
			return 0, false, err
		}
		if len(h) <= 2 {
			break
		}
		colon := bytes.IndexByte(h, ':')
		if colon < 0 {
			continue
		}
		name := bytes.ToLower(bytes.TrimSpace(h[:colon]))
		val := bytes.ToLower(bytes.TrimSpace(h[colon+1:]))
		switch string(name) {
		case "content-length":
			length, _ = strconv.Atoi(string(val))
		case "transfer-encoding":
			chunked = bytes.Contains(val, []byte("chunked"))
		case "connection":
			if bytes.Equal(val, []byte("close")) {
				keep = false
			} else if bytes.Equal(val, []byte("keep-alive")) {
				keep = true
			}
		}
	}
	switch {
	case chunked:
		for {
			szLine, err := br.ReadSlice('\n')
			if err != nil {
				return 0, false, err
			}
			sz, err := strconv.ParseInt(string(bytes.TrimSpace(bytes.SplitN(szLine, []byte(";"), 2)[0])), 16, 64)
			if err != nil {
				return 0, false, errBadResponse
			}
			if _, err := br.Discard(int(sz) + 2); err != nil {
				return 0, false, err
			}
			if sz == 0 {
				break
			}
		}
	case length >= 0:
		if _, err := br.Discard(length); err != nil {
			return 0, false, err
		}
	default:
		if _, err := io.Copy(io.Discard, br); err != nil {
			return 0, false, err
		}
		keep = false
	}
	return code, keep, nil
}
