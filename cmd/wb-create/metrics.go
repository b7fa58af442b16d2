package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	wbcli "github.com/writeboost/writeboost/internal/cli"
	"github.com/writeboost/writeboost/internal/nbd"
	"github.com/writeboost/writeboost/internal/vocab"
)

// defaultMetricsHost is where --metrics tcp://:PORT listens: metrics say
// how busy a volume is and which devices it uses, so only this host by
// default.
const defaultMetricsHost = "127.0.0.1"

// parseMetrics turns --metrics tcp://HOST:PORT into HOST:PORT ("" without
// the flag); an empty HOST is loopback.
func parseMetrics(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "tcp" || u.Port() == "" || (u.Path != "" && u.Path != "/") {
		return "", wbcli.Usagef("--metrics %q: want tcp://HOST:PORT", s)
	}
	host := u.Hostname()
	if host == "" {
		host = defaultMetricsHost
	}
	return net.JoinHostPort(host, u.Port()), nil
}

// serveMetrics serves GET /metrics in the Prometheus text format on addr
// (parseMetrics) until the returned stop is called; every scrape takes a
// fresh status snapshot, and the collectors in more (the NBD requests'
// metrics) are served beside it. Nothing without --metrics.
func serveMetrics(log *slog.Logger, addr, name string, status func() vocab.Status, more ...prometheus.Collector) (stop func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics: listen on tcp://%s: %w", addr, err)
	}
	if !isLoopback(l.Addr()) {
		log.Warn("serving metrics on a non-loopback address: anyone who reaches it sees the volume's devices and load", "addr", l.Addr().String())
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(newVolumeCollector(name, status), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(more...)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server failed", "err", err)
		}
	}()
	log.Info("serving metrics", "url", "http://"+l.Addr().String()+"/metrics")
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		srv.Shutdown(ctx) //nolint:errcheck // a scrape cut short at stop is harmless
		<-done
	}, nil
}

// volumeCollector turns one status snapshot per scrape into metrics, all
// labelled with the volume name.
type volumeCollector struct {
	status func() vocab.Status
	descs  map[string]*prometheus.Desc
}

// metric is one series family: its name (after writeboost_), help, kind
// and variable labels.
type metric struct {
	name, help string
	kind       prometheus.ValueType
	labels     []string
}

var metrics = []metric{
	{"io_total", "I/Os by kind, the kernel target's 16 counters (reset by clear_stat).", prometheus.CounterValue, []string{"op", "result", "where", "size"}},
	{"partial_flushed_total", "FLUSH requests and FUA writes (nr_partial_flushed; reset by clear_stat).", prometheus.CounterValue, nil},
	{"dirty_cache_blocks", "Cache blocks not yet written back.", prometheus.GaugeValue, nil},
	{"dirty_bytes", "Data not yet written back, in bytes (dirty blocks times 4096).", prometheus.GaugeValue, nil},
	{"cache_blocks", "Cache blocks on the cache device.", prometheus.GaugeValue, nil},
	{"segments", "Segments on the cache device.", prometheus.GaugeValue, nil},
	{"segment_id", "Segment ids: current, last_flushed, last_writeback, last_durable, superblock_record.", prometheus.GaugeValue, []string{"kind"}},
	{"ram_buffer_bytes", "Data in RAM buffers not yet on the cache device.", prometheus.GaugeValue, nil},
	{"writeback_bytes_total", "Bytes written back to the backing device since start.", prometheus.CounterValue, nil},
	{"writeback_bytes_per_second", "Writeback rate now.", prometheus.GaugeValue, nil},
	{"writeback_allowed", "1 when the modulator lets background writeback run.", prometheus.GaugeValue, nil},
	{"backing_utilization_ratio", "How busy the backing device is, 0 to 1.", prometheus.GaugeValue, nil},
	{"io_errors_total", "Failed I/Os by device and direction.", prometheus.CounterValue, []string{"device", "op"}},
	{"writeback_errors_total", "Failed writeback batches (each retried).", prometheus.CounterValue, nil},
	{"failed", "1 when the volume refuses writes after a failure.", prometheus.GaugeValue, nil},
	{"nbd_clients", "NBD connections open now.", prometheus.GaugeValue, nil},
	{"tunable", "Tunables of the status line.", prometheus.GaugeValue, []string{"name"}},
	{"size_bytes", "Volume size.", prometheus.GaugeValue, nil},
	{"uptime_seconds", "Seconds since the volume started.", prometheus.GaugeValue, nil},
}

func newVolumeCollector(name string, status func() vocab.Status) *volumeCollector {
	c := &volumeCollector{status: status, descs: map[string]*prometheus.Desc{}}
	for _, m := range metrics {
		c.descs[m.name] = prometheus.NewDesc("writeboost_"+m.name, m.help, m.labels, prometheus.Labels{"volume": name})
	}
	return c
}

func (c *volumeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *volumeCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.status()
	kinds := map[string]prometheus.ValueType{}
	for _, m := range metrics {
		kinds[m.name] = m.kind
	}
	put := func(name string, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(c.descs[name], kinds[name], v, labels...)
	}
	b := func(ok bool) float64 {
		if ok {
			return 1
		}
		return 0
	}
	for i, v := range s.Stat {
		put("io_total", float64(v), strings.Fields(vocab.StatName(i))...) // op result where size
	}
	put("partial_flushed_total", float64(s.NrPartialFlushed))
	put("dirty_cache_blocks", float64(s.NrDirtyCacheBlocks))
	put("dirty_bytes", float64(s.Report().DirtyBytes))
	put("cache_blocks", float64(s.NrCacheBlocks))
	put("segments", float64(s.NrSegments))
	put("segment_id", float64(s.CurrentID), "current")
	put("segment_id", float64(s.LastFlushedID), "last_flushed")
	put("segment_id", float64(s.LastWritebackID), "last_writeback")
	put("segment_id", float64(s.LastDurableID), "last_durable")
	put("segment_id", float64(s.SuperblockRecordID), "superblock_record")
	put("ram_buffer_bytes", float64(s.RAMBufferBytes))
	put("writeback_bytes_total", float64(s.WritebackBytes))
	put("writeback_bytes_per_second", float64(s.WritebackBytesPerSec))
	if s.WritebackAllowed != nil {
		put("writeback_allowed", b(*s.WritebackAllowed))
	}
	put("backing_utilization_ratio", float64(s.BackingUtilPercent)/100)
	e := s.Errors
	put("io_errors_total", float64(e.CacheRead), "cache", "read")
	put("io_errors_total", float64(e.CacheWrite), "cache", "write")
	put("io_errors_total", float64(e.BackingRead), "backing", "read")
	put("io_errors_total", float64(e.BackingWrite), "backing", "write")
	put("writeback_errors_total", float64(e.Writeback))
	put("failed", b(s.Failed != ""))
	if s.NrClients != nil {
		put("nbd_clients", float64(*s.NrClients))
	}
	for i, n := range vocab.StatusTunableNames {
		put("tunable", float64(*s.Tunables.Field(i)), n)
	}
	put("size_bytes", float64(s.SizeBytes))
	put("uptime_seconds", s.UptimeSeconds)
}

// latencyBuckets are the NBD request duration histograms' upper bounds,
// in seconds: 20 µs (a write into the RAM buffer) to 10 s (a flush behind
// a stalled device), 1-2-5 steps.
var latencyBuckets = []float64{
	20e-6, 50e-6, 100e-6, 200e-6, 500e-6,
	1e-3, 2e-3, 5e-3, 10e-3, 20e-3, 50e-3, 100e-3, 200e-3, 500e-3,
	1, 2, 5, 10,
}

// nbdSeries are the series nbdMetrics serves (after writeboost_), for the
// man page test; all but replay_seconds carry a command label.
var nbdSeries = []string{"nbd_requests_total", "nbd_bytes_total", "nbd_errors_total", "nbd_request_duration_seconds", "replay_seconds"}

// timedCommands are the commands with a latency histogram.
var timedCommands = []nbd.Command{nbd.CmdRead, nbd.CmdWrite, nbd.CmdFlush}

// nbdMetrics counts the NBD requests the volume answers (an nbd.Observer)
// and serves them with the replay time (a prometheus.Collector). Observe
// runs once per request on the serving goroutines: the children are
// resolved once here, so that it only does atomic adds.
type nbdMetrics struct {
	requests, bytes, errors *prometheus.CounterVec
	latency                 *prometheus.HistogramVec
	replay                  prometheus.Gauge
	// byCmd[c] holds command c's children; other is for the commands
	// the server refuses (no bytes, no latency).
	byCmd [nbd.CmdWriteZeroes + 1]*cmdMetrics
	other cmdMetrics
}

type cmdMetrics struct {
	requests, bytes, errors prometheus.Counter
	latency                 prometheus.Observer // nil: not timed
}

func newNBDMetrics(name string) *nbdMetrics {
	vol := prometheus.Labels{"volume": name}
	counter := func(n, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: "writeboost_" + n, Help: help, ConstLabels: vol}, []string{"command"})
	}
	m := &nbdMetrics{
		requests: counter("nbd_requests_total", "NBD requests answered, by command (read, write, flush, trim, write_zeroes; other: refused unknown commands)."),
		bytes:    counter("nbd_bytes_total", "Bytes of the NBD requests that succeeded, by command: data read or written, the range trimmed or zeroed."),
		errors:   counter("nbd_errors_total", "NBD requests answered with an error, by command: refused (bad range, flags) or failed by the volume."),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "writeboost_nbd_request_duration_seconds",
			Help: "Time from an NBD request's arrival to its reply, for read, write and flush.", ConstLabels: vol, Buckets: latencyBuckets}, []string{"command"}),
		replay: prometheus.NewGauge(prometheus.GaugeOpts{Name: "writeboost_replay_seconds", Help: "How long the replay of the cache log took at start.", ConstLabels: vol}),
	}
	child := func(c nbd.Command) cmdMetrics {
		l := c.String()
		return cmdMetrics{requests: m.requests.WithLabelValues(l), bytes: m.bytes.WithLabelValues(l), errors: m.errors.WithLabelValues(l)}
	}
	for _, c := range []nbd.Command{nbd.CmdRead, nbd.CmdWrite, nbd.CmdFlush, nbd.CmdTrim, nbd.CmdWriteZeroes} {
		cm := child(c)
		m.byCmd[c] = &cm
	}
	for _, c := range timedCommands {
		m.byCmd[c].latency = m.latency.WithLabelValues(c.String())
	}
	m.other = cmdMetrics{requests: m.requests.WithLabelValues("other"), errors: m.errors.WithLabelValues("other")}
	return m
}

// Observe counts one answered request (nbd.Observer).
func (m *nbdMetrics) Observe(cmd nbd.Command, length uint32, took time.Duration, err error) {
	c := &m.other
	if int(cmd) < len(m.byCmd) && m.byCmd[cmd] != nil {
		c = m.byCmd[cmd]
	}
	c.requests.Inc()
	if err != nil {
		c.errors.Inc()
	} else if c.bytes != nil {
		c.bytes.Add(float64(length))
	}
	if c.latency != nil {
		c.latency.Observe(took.Seconds())
	}
}

func (m *nbdMetrics) Describe(ch chan<- *prometheus.Desc) {
	m.requests.Describe(ch)
	m.bytes.Describe(ch)
	m.errors.Describe(ch)
	m.latency.Describe(ch)
	m.replay.Describe(ch)
}

func (m *nbdMetrics) Collect(ch chan<- prometheus.Metric) {
	m.requests.Collect(ch)
	m.bytes.Collect(ch)
	m.errors.Collect(ch)
	m.latency.Collect(ch)
	m.replay.Collect(ch)
}
