package main

// Frame-level interop: encode a scripted sequence with spdystream's framer
// (framer-dump) and decode arbitrary input with it (framer-read).

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"os"
	"strings"

	"github.com/moby/spdystream/spdy"
)

// frameJSON is the JSON shape shared by framer-dump (stderr) and framer-read
// (stdout). Field names follow the SPDY/3 spec; absent fields are omitted.
type frameJSON struct {
	Type             string              `json:"type"`
	StreamID         *uint32             `json:"stream_id,omitempty"`
	Flags            *uint8              `json:"flags,omitempty"`
	AssociatedTo     *uint32             `json:"associated_to,omitempty"`
	Priority         *uint8              `json:"priority,omitempty"`
	Slot             *uint8              `json:"slot,omitempty"`
	Headers          map[string][]string `json:"headers,omitempty"`
	Length           *int                `json:"length,omitempty"`
	SHA256           string              `json:"sha256,omitempty"`
	Hex              *string             `json:"hex,omitempty"`
	Status           *uint32             `json:"status,omitempty"`
	Settings         []settingJSON       `json:"settings,omitempty"`
	PingID           *uint32             `json:"ping_id,omitempty"`
	LastGoodStreamID *uint32             `json:"last_good_stream_id,omitempty"`
	Delta            *uint32             `json:"delta,omitempty"`
	Error            string              `json:"error,omitempty"`
}

type settingJSON struct {
	Flag  uint8  `json:"flag"`
	ID    uint32 `json:"id"`
	Value uint32 `json:"value"`
}

func u32(v uint32) *uint32 { return &v }
func u8(v uint8) *uint8    { return &v }

// headersJSON copies a header block with lower-cased names, as spdystream puts them
// on the wire. An empty block is omitted from the JSON (omitempty).
func headersJSON(h http.Header) map[string][]string {
	out := map[string][]string{}
	for name, values := range h {
		key := strings.ToLower(name)
		out[key] = append(out[key], values...)
	}
	return out
}

func describe(frame spdy.Frame) frameJSON {
	switch f := frame.(type) {
	case *spdy.SynStreamFrame:
		return frameJSON{Type: "SYN_STREAM", StreamID: u32(uint32(f.StreamId)), Flags: u8(uint8(f.CFHeader.Flags)),
			AssociatedTo: u32(uint32(f.AssociatedToStreamId)), Priority: u8(f.Priority), Slot: u8(f.Slot),
			Headers: headersJSON(f.Headers)}
	case *spdy.SynReplyFrame:
		return frameJSON{Type: "SYN_REPLY", StreamID: u32(uint32(f.StreamId)), Flags: u8(uint8(f.CFHeader.Flags)),
			Headers: headersJSON(f.Headers)}
	case *spdy.HeadersFrame:
		return frameJSON{Type: "HEADERS", StreamID: u32(uint32(f.StreamId)), Flags: u8(uint8(f.CFHeader.Flags)),
			Headers: headersJSON(f.Headers)}
	case *spdy.RstStreamFrame:
		return frameJSON{Type: "RST_STREAM", StreamID: u32(uint32(f.StreamId)), Flags: u8(uint8(f.CFHeader.Flags)),
			Status: u32(uint32(f.Status))}
	case *spdy.SettingsFrame:
		settings := []settingJSON{}
		for _, s := range f.FlagIdValues {
			settings = append(settings, settingJSON{Flag: uint8(s.Flag), ID: uint32(s.Id), Value: s.Value})
		}
		return frameJSON{Type: "SETTINGS", Flags: u8(uint8(f.CFHeader.Flags)), Settings: settings}
	case *spdy.PingFrame:
		return frameJSON{Type: "PING", Flags: u8(uint8(f.CFHeader.Flags)), PingID: u32(f.Id)}
	case *spdy.GoAwayFrame:
		return frameJSON{Type: "GOAWAY", Flags: u8(uint8(f.CFHeader.Flags)),
			LastGoodStreamID: u32(uint32(f.LastGoodStreamId)), Status: u32(uint32(f.Status))}
	case *spdy.WindowUpdateFrame:
		return frameJSON{Type: "WINDOW_UPDATE", StreamID: u32(uint32(f.StreamId)), Flags: u8(uint8(f.CFHeader.Flags)),
			Delta: u32(f.DeltaWindowSize)}
	case *spdy.DataFrame:
		n := len(f.Data)
		sum := sha256.Sum256(f.Data)
		out := frameJSON{Type: "DATA", StreamID: u32(uint32(f.StreamId)), Flags: u8(uint8(f.Flags)), Length: &n,
			SHA256: hex.EncodeToString(sum[:])}
		if n <= 64 {
			h := hex.EncodeToString(f.Data)
			out.Hex = &h
		}
		return out
	}
	return frameJSON{Type: fmt.Sprintf("UNKNOWN(%T)", frame)}
}

// pseudoRandomText returns n deterministic, poorly compressible characters.
func pseudoRandomText(rng *rand.Rand, n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/"
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[rng.Intn(len(alphabet))]
	}
	return string(b)
}

// scriptedFrames is the sequence framer-dump writes. It covers every frame type the
// framer knows, every flag spdystream uses, Kubernetes-style headers, multi-valued
// headers, empty header blocks and payloads, and many consecutive header blocks so
// that the connection-wide zlib context is exercised (including blocks larger than
// the 4 KiB read buffer Go's inflater uses).
func scriptedFrames(blocks int) []spdy.Frame {
	rng := rand.New(rand.NewSource(20140101))
	payload := make([]byte, 70000)
	rng.Read(payload)
	frames := []spdy.Frame{
		&spdy.SynStreamFrame{StreamId: 1, Priority: 3, Headers: http.Header{
			"streamtype":                {"error"},
			"port":                      {"8080"},
			"requestid":                 {"0"},
			"x-multi":                   {"a", "b", "c"},
			"X-Mixed-Case":              {"Value Keeps Its Case"},
			"x-stream-protocol-version": {"v4.channel.k8s.io", "v3.channel.k8s.io", "channel.k8s.io"},
		}},
		&spdy.SynStreamFrame{StreamId: 3, AssociatedToStreamId: 1, Priority: 7,
			CFHeader: spdy.ControlFrameHeader{Flags: spdy.ControlFlagFin | spdy.ControlFlagUnidirectional},
			Headers:  http.Header{}},
		&spdy.SynReplyFrame{StreamId: 1, Headers: http.Header{"x-reply": {"ok"}}},
		&spdy.SynReplyFrame{StreamId: 2, CFHeader: spdy.ControlFrameHeader{Flags: spdy.ControlFlagFin},
			Headers: http.Header{}},
		&spdy.HeadersFrame{StreamId: 1, Headers: http.Header{"x-trailer": {"t1"}}},
		&spdy.HeadersFrame{StreamId: 1, CFHeader: spdy.ControlFrameHeader{Flags: spdy.ControlFlagFin},
			Headers: http.Header{"x-trailer": {"t2", "t3"}}},
		&spdy.DataFrame{StreamId: 1, Data: []byte("hello")},
		&spdy.DataFrame{StreamId: 1, Data: []byte{}},
		&spdy.DataFrame{StreamId: 1, Data: payload},
		&spdy.DataFrame{StreamId: 1, Flags: spdy.DataFlagFin, Data: []byte("bye")},
		&spdy.DataFrame{StreamId: 0x7fffffff, Flags: spdy.DataFlagFin, Data: []byte{}},
	}
	for status := spdy.ProtocolError; status <= spdy.FrameTooLarge; status++ {
		frames = append(frames, &spdy.RstStreamFrame{StreamId: 5, Status: status})
	}
	frames = append(frames,
		&spdy.SettingsFrame{FlagIdValues: []spdy.SettingsFlagIdValue{
			{Flag: 0, Id: spdy.SettingsInitialWindowSize, Value: 65536},
			{Flag: spdy.FlagSettingsPersistValue, Id: spdy.SettingsMaxConcurrentStreams, Value: 100},
		}},
		&spdy.SettingsFrame{CFHeader: spdy.ControlFrameHeader{Flags: spdy.ControlFlagSettingsClearSettings},
			FlagIdValues: []spdy.SettingsFlagIdValue{}},
		&spdy.PingFrame{Id: 1},
		&spdy.PingFrame{Id: 2},
		&spdy.PingFrame{Id: 0xffffffff},
		&spdy.WindowUpdateFrame{StreamId: 1, DeltaWindowSize: 65536},
		&spdy.WindowUpdateFrame{StreamId: 0, DeltaWindowSize: 0x7fffffff},
	)
	streamTypes := []string{"error", "stdin", "stdout", "stderr", "resize", "data"}
	for i := 0; i < blocks; i++ {
		id := spdy.StreamId(7 + 2*i)
		h := http.Header{
			"streamtype": {streamTypes[i%len(streamTypes)]},
			"port":       {fmt.Sprint(8000 + i%50)},
			"requestid":  {fmt.Sprint(i / 2)},
		}
		if i%7 == 0 {
			h["x-multi"] = []string{fmt.Sprint(i), "second", fmt.Sprint(i * i)}
		}
		if i%50 == 25 {
			h["x-big"] = []string{pseudoRandomText(rng, 20000)}
		}
		switch i % 3 {
		case 0:
			frames = append(frames, &spdy.SynStreamFrame{StreamId: id, Priority: uint8(i % 8), Headers: h})
		case 1:
			frames = append(frames, &spdy.SynReplyFrame{StreamId: id, Headers: h})
		default:
			frames = append(frames, &spdy.HeadersFrame{StreamId: id, Headers: h})
		}
	}
	frames = append(frames,
		&spdy.GoAwayFrame{LastGoodStreamId: 601, Status: spdy.GoAwayOK},
		&spdy.GoAwayFrame{LastGoodStreamId: 0, Status: spdy.GoAwayProtocolError},
		&spdy.GoAwayFrame{LastGoodStreamId: 0x7fffffff, Status: spdy.GoAwayInternalError},
	)
	return frames
}

// framerDump writes the scripted frames to stdout and, on stderr, one JSON line per
// frame describing what was written (in framer-read's format).
func framerDump(args []string) {
	fs := flag.NewFlagSet("framer-dump", flag.ExitOnError)
	blocks := fs.Int("blocks", 300, "number of consecutive header blocks")
	fs.Parse(args)
	out := bufio.NewWriterSize(os.Stdout, 1<<20)
	framer, err := spdy.NewFramer(out, nil)
	if err != nil {
		fatalf("framer: %v", err)
	}
	desc := bufio.NewWriter(os.Stderr)
	for _, frame := range scriptedFrames(*blocks) {
		if err := framer.WriteFrame(frame); err != nil {
			fatalf("write %T: %v", frame, err)
		}
		b, _ := jsonLine(describe(frame))
		desc.Write(b)
	}
	if err := out.Flush(); err != nil {
		fatalf("flush: %v", err)
	}
	desc.Flush()
}

// framerRead decodes stdin with spdystream's framer until EOF. A decoding error is
// reported as a final {"type":"ERROR"} line and exit status 1.
func framerRead(args []string) {
	fs := flag.NewFlagSet("framer-read", flag.ExitOnError)
	fs.Parse(args)
	framer, err := spdy.NewFramer(io.Discard, bufio.NewReaderSize(os.Stdin, 1<<20))
	if err != nil {
		fatalf("framer: %v", err)
	}
	for {
		frame, err := framer.ReadFrame()
		if err == io.EOF {
			return
		}
		if err != nil {
			emit(frameJSON{Type: "ERROR", Error: err.Error()})
			os.Exit(1)
		}
		emit(describe(frame))
	}
}
