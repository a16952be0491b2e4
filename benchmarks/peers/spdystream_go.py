"""Reference peer: Go moby/spdystream (Debian's source), built at run time.

The Go program below is ours (it only *uses* spdystream's public API); it is written
to a temporary GOPATH and built with ``GO111MODULE=off`` against
``/usr/share/gocode``.  It speaks the same JSON-lines conversation as the Python
workers, with the same scenarios as ``mux.py``: ``bulk`` (streams with header
``mode: bulk``, the reply is the 8-byte count) and ``churn`` (``mode: echo``).
spdystream has no flow control, so its bulk rate is bounded only by TCP and Go.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

SPDYSTREAM_SOURCE = Path("/usr/share/gocode/src/github.com/moby/spdystream")

GO_SOURCE = r"""
package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/moby/spdystream"
)

type params struct {
	Size        int64 `json:"size"`
	Warmup      int64 `json:"warmup"`
	Streams     int   `json:"streams"`
	Count       int64 `json:"count"`
	Concurrency int   `json:"concurrency"`
}

type spec struct {
	Role     string `json:"role"`
	Scenario string `json:"scenario"`
	Port     int    `json:"port"`
	Params   params `json:"params"`
}

const chunk = 256 * 1024

var payload = make([]byte, chunk)

func emit(fields map[string]interface{}) {
	b, err := json.Marshal(fields)
	if err != nil {
		panic(err)
	}
	os.Stdout.Write(append(b, '\n'))
}

var stdin = bufio.NewReader(os.Stdin)

// startTimed tells the orchestrator the measured section starts and waits for "go".
func startTimed() (time.Time, float64) {
	emit(map[string]interface{}{"event": "checkpoint", "name": "start"})
	if _, err := stdin.ReadString('\n'); err != nil {
		fail(err)
	}
	return time.Now(), cpuSeconds()
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "spdybench:", err)
	os.Exit(1)
}

func main() {
	var s spec
	if err := json.Unmarshal([]byte(os.Args[1]), &s); err != nil {
		fail(err)
	}
	if s.Role == "server" {
		server()
	} else {
		client(s)
	}
}

func server() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	emit(map[string]interface{}{"event": "listening", "port": port, "pid": os.Getpid()})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			fail(err)
		}
		go serveConn(c)
	}
}

func serveConn(c net.Conn) {
	conn, err := spdystream.NewConnection(c, true)
	if err != nil {
		return
	}
	conn.Serve(func(st *spdystream.Stream) {
		if err := st.SendReply(http.Header{}, false); err != nil {
			return
		}
		echo := st.Headers().Get("mode") == "echo"
		go func() {
			buf := make([]byte, chunk)
			var total int64
			var kept []byte
			for {
				n, err := st.Read(buf)
				total += int64(n)
				if echo {
					kept = append(kept, buf[:n]...)
				}
				if err != nil {
					break
				}
			}
			if echo {
				st.Write(kept)
			} else {
				var ack [8]byte
				binary.BigEndian.PutUint64(ack[:], uint64(total))
				st.Write(ack[:])
			}
			st.Close()
		}()
	})
}

func exchange(conn *spdystream.Connection, mode string, size int64) []byte {
	st, err := conn.CreateStream(http.Header{"Mode": {mode}}, nil, false)
	if err != nil {
		fail(err)
	}
	if err := st.Wait(); err != nil {
		fail(err)
	}
	for size > 0 {
		n := int64(chunk)
		if size < n {
			n = size
		}
		if _, err := st.Write(payload[:n]); err != nil {
			fail(err)
		}
		size -= n
	}
	if err := st.Close(); err != nil {
		fail(err)
	}
	reply, err := io.ReadAll(st)
	if err != nil {
		fail(err)
	}
	return reply
}

func bulk(conn *spdystream.Connection, size int64, streams int) {
	var wg sync.WaitGroup
	for i := 0; i < streams; i++ {
		n := size / int64(streams)
		if int64(i) < size%int64(streams) {
			n++
		}
		wg.Add(1)
		go func(n int64) {
			defer wg.Done()
			reply := exchange(conn, "bulk", n)
			if len(reply) != 8 || int64(binary.BigEndian.Uint64(reply)) != n {
				fail(fmt.Errorf("bad bulk ack %v for %d bytes", reply, n))
			}
		}(n)
	}
	wg.Wait()
}

func churn(conn *spdystream.Connection, count int64, concurrency int) {
	var left int64 = count
	var wg sync.WaitGroup
	for i := 0; i < concurrency; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for atomic.AddInt64(&left, -1) >= 0 {
				if reply := exchange(conn, "echo", 100); len(reply) != 100 {
					fail(fmt.Errorf("bad echo of %d bytes", len(reply)))
				}
			}
		}()
	}
	wg.Wait()
}

func client(s spec) {
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", s.Port))
	if err != nil {
		fail(err)
	}
	conn, err := spdystream.NewConnection(c, false)
	if err != nil {
		fail(err)
	}
	go conn.Serve(spdystream.NoOpStreamHandler)
	p := s.Params
	if p.Streams == 0 {
		p.Streams = 1
	}
	var start time.Time
	var cpu0 float64
	result := map[string]interface{}{"event": "result"}
	switch s.Scenario {
	case "bulk":
		if p.Warmup > 0 {
			bulk(conn, p.Warmup, p.Streams)
		}
		start, cpu0 = startTimed()
		bulk(conn, p.Size, p.Streams)
		result["bytes"] = p.Size
	case "churn":
		churn(conn, 50, p.Concurrency)
		start, cpu0 = startTimed()
		churn(conn, p.Count, p.Concurrency)
		result["count"] = p.Count
	default:
		fail(fmt.Errorf("unknown scenario %q", s.Scenario))
	}
	result["seconds"] = time.Since(start).Seconds()
	result["client_cpu"] = cpuSeconds() - cpu0
	emit(result)
	conn.Close()
}
"""


def unavailable_reason() -> str | None:
    """Return why the Go reference peer cannot be built here, or None if it can."""
    if shutil.which("go") is None:
        return "go is not installed"
    if not SPDYSTREAM_SOURCE.is_dir():
        return f"{SPDYSTREAM_SOURCE} is missing (Debian golang-github-moby-spdystream-dev)"
    return None


def build(workdir: Path) -> Path:
    """Build the Go peer into ``workdir`` and return the binary's path.

    Raises ``RuntimeError`` with the compiler output if the build fails.
    """
    src = workdir / "src" / "spdybench"
    src.mkdir(parents=True, exist_ok=True)
    (src / "main.go").write_text(GO_SOURCE)
    binary = workdir / "spdybench"
    env = dict(os.environ)
    env.update(GO111MODULE="off", GOPATH=f"{workdir}:/usr/share/gocode", GOFLAGS="")
    env.setdefault("GOCACHE", str(Path.home() / ".cache" / "go-build"))
    proc = subprocess.run(
        ["go", "build", "-o", str(binary), "."],
        cwd=src,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"go build failed:\n{proc.stdout}{proc.stderr}")
    return binary
