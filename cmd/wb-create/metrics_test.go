package main

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	wbcli "github.com/writeboost/writeboost/internal/cli"
)

func TestParseMetrics(t *testing.T) {
	for in, want := range map[string]string{"": "", "tcp://:9512": "127.0.0.1:9512", "tcp://0.0.0.0:1": "0.0.0.0:1", "tcp://[::1]:2": "[::1]:2"} {
		if got, err := parseMetrics(in); err != nil || got != want {
			t.Errorf("parseMetrics(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"http://:1", "tcp://host", "tcp://:1/metrics", ":1"} {
		if _, err := parseMetrics(in); !wbcli.IsUsage(err) {
			t.Errorf("parseMetrics(%q): %v, want a usage error", in, err)
		}
	}
}

// TestMetrics: /metrics serves the volume's series, and they move with I/O.
func TestMetrics(t *testing.T) {
	_, b, c := images(t, 16<<20, 8<<20)
	r := start(t, "--reformat", "--metrics", "tcp://127.0.0.1:0", "mv", b, c)
	m := regexp.MustCompile(`url=(http://\S+/metrics)`).FindStringSubmatch(r.stderr.String())
	if m == nil {
		t.Fatalf("no metrics url logged: %s", r.stderr)
	}
	scrape := func() string {
		t.Helper()
		resp, err := http.Get(m[1])
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %v", m[1], resp.StatusCode, err)
		}
		return string(body)
	}
	before := scrape()
	for _, want := range []string{
		`writeboost_io_total{op="write",result="miss",size="full",volume="mv",where="cache"} 0`,
		`writeboost_dirty_bytes{volume="mv"} 0`,
		`writeboost_nbd_clients{volume="mv"} 0`,
		`writeboost_tunable{name="writeback_threshold",volume="mv"}`,
		`writeboost_segment_id{kind="current",volume="mv"}`,
		`writeboost_backing_utilization_ratio{volume="mv"}`,
		`go_goroutines `,
	} {
		if !strings.Contains(before, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if !regexp.MustCompile(`(?m)^writeboost_replay_seconds\{volume="mv"\} [0-9.e-]+$`).MatchString(before) {
		t.Errorf("/metrics lacks writeboost_replay_seconds")
	}
	nc := dial(t, "mv")
	if err := nc.WriteAt(bytes.Repeat([]byte{1}, 8192), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := nc.ReadAt(make([]byte, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := nc.ReadAt(make([]byte, 4096), 16<<20); err == nil {
		t.Fatal("a read past the end succeeded")
	}
	wants := []string{
		`writeboost_io_total{op="write",result="miss",size="full",volume="mv",where="cache"} 2`,
		`writeboost_dirty_bytes{volume="mv"} 8192`,
		`writeboost_nbd_clients{volume="mv"} 1`,
		`writeboost_nbd_requests_total{command="write",volume="mv"} 1`,
		`writeboost_nbd_bytes_total{command="write",volume="mv"} 8192`,
		`writeboost_nbd_requests_total{command="read",volume="mv"} 2`,
		`writeboost_nbd_bytes_total{command="read",volume="mv"} 4096`,
		`writeboost_nbd_errors_total{command="read",volume="mv"} 1`,
		`writeboost_nbd_errors_total{command="write",volume="mv"} 0`,
		`writeboost_nbd_requests_total{command="flush",volume="mv"} 1`,
		`writeboost_nbd_request_duration_seconds_count{command="write",volume="mv"} 1`,
		`writeboost_nbd_request_duration_seconds_count{command="read",volume="mv"} 2`,
		`writeboost_nbd_request_duration_seconds_count{command="flush",volume="mv"} 1`,
		`writeboost_nbd_request_duration_seconds_bucket{command="write",volume="mv",le="10"} 1`,
	}
	// A request goroutine counts its request just after its reply
	// left: some may still be on their way.
	var after string
	has := func(want string) bool { return strings.Contains(after, want) }
	for deadline := time.Now().Add(5 * time.Second); ; {
		after = scrape()
		if !slices.ContainsFunc(wants, func(w string) bool { return !has(w) }) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	nc.Close()
	for _, want := range wants {
		if !has(want) {
			t.Errorf("after I/O, /metrics lacks %q", want)
		}
	}
	r.stop(t)
}

// TestMetricsManPage: wb-create(8) names every series it serves.
func TestMetricsManPage(t *testing.T) {
	page, err := os.ReadFile("../../man/wb-create.8")
	if err != nil {
		t.Fatal(err)
	}
	names := slices.Clone(nbdSeries)
	for _, m := range metrics {
		names = append(names, m.name)
	}
	for _, n := range names {
		if !bytes.Contains(page, []byte(".BR writeboost_"+n)) && !bytes.Contains(page, []byte(".B writeboost_"+n)) {
			t.Errorf("man/wb-create.8 does not name writeboost_%s", n)
		}
	}
}
