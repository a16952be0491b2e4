// Command spdypeer is a test peer for muxstream's interoperability tests.
//
// It drives Debian's github.com/moby/spdystream (and its spdy framer) so that
// muxstream is checked against the real Go implementation that Kubernetes uses.
// Every subcommand prints machine-readable JSON on stdout (one object per line)
// and diagnostics on stderr; see tests/interop/conftest.py for the Python side
// and docs/interop.md for what is verified.
//
// Subcommands:
//
//	framer-dump     write a scripted frame sequence (bytes) to stdout and its
//	                JSON description to stderr
//	framer-read     read frames from stdin, one JSON line per frame on stdout
//	echo-server     accept sessions, echo every stream (prints its address first)
//	client          open N streams to an echo server and verify the echoes
//	consumer        accept one stream, read it slowly while pinging
//	producer        open one stream, send N bytes, close stream and session
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sync"
)

var stdoutLock sync.Mutex

// emit writes one JSON object as a line on stdout; safe from any goroutine.
func emit(v interface{}) {
	b, err := json.Marshal(v)
	if err != nil {
		fatalf("json: %v", err)
	}
	stdoutLock.Lock()
	defer stdoutLock.Unlock()
	os.Stdout.Write(append(b, '\n'))
}

// jsonLine is v as one line of JSON.
func jsonLine(v interface{}) ([]byte, error) {
	b, err := json.Marshal(v)
	return append(b, '\n'), err
}

func fatalf(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "spdypeer: "+format+"\n", args...)
	os.Exit(2)
}

func main() {
	if len(os.Args) < 2 {
		fatalf("usage: spdypeer framer-dump|framer-read|echo-server|client|consumer|producer [flags]")
	}
	args := os.Args[2:]
	switch os.Args[1] {
	case "framer-dump":
		framerDump(args)
	case "framer-read":
		framerRead(args)
	case "echo-server":
		echoServer(args)
	case "client":
		echoClient(args)
	case "consumer":
		consumer(args)
	case "producer":
		producer(args)
	default:
		fatalf("unknown subcommand %q", os.Args[1])
	}
}
