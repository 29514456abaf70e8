// bench-sink: a Go net/http server that reads the body and answers 200, for the benchmark's
// load-generator check only (is vegeta, on its one core, able to send well past the ceiling's
// rate?). Usage: bench-sink PORT. Standard library only; built by benchmarks/run.py.
package main

import (
	"io"
	"net/http"
	"os"
)

func main() {
	body := []byte(`{"msg":"success"}`)
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Write(body)
	})
	if err := http.ListenAndServe("127.0.0.1:"+os.Args[1], nil); err != nil {
		panic(err)
	}
}
