package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"
)

// fioDir is one direction of a fio job's result (fio's "read" or "write"
// object in --output-format=json).
type fioDir struct {
	IOBytes  int64   `json:"io_bytes"`
	BWBytes  float64 `json:"bw_bytes"` // bytes per second
	IOPS     float64 `json:"iops"`
	RuntimeM int64   `json:"runtime"` // milliseconds
	TotalIOs int64   `json:"total_ios"`
	Lat      fioLat  `json:"lat_ns"`  // submission to completion
	Clat     fioLat  `json:"clat_ns"` // completion latency (percentiles are reported for it)
}

// fioLat is one of fio's latency objects (nanoseconds). fio reports
// percentiles for clat_ns of reads and writes and for lat_ns of syncs; the
// keys are the percentile formatted "%f", the median being "50.000000".
type fioLat struct {
	N          int64              `json:"N"`
	Mean       float64            `json:"mean"`
	Percentile map[string]float64 `json:"percentile"`
}

// p50 returns the median in nanoseconds, if fio reported one.
func (l fioLat) p50() (float64, bool) {
	v, ok := l.Percentile["50.000000"]
	return v, ok && l.N > 0
}

// fioResult is what the harness keeps of one fio job.
type fioResult struct {
	Read  fioDir
	Write fioDir
	Syncs int64 // fsync/flush requests fio issued (NBD_CMD_FLUSH with the nbd engine)
	// SyncLat is the latency of those requests: NBD_CMD_FLUSH with the nbd
	// engine, fsync/fdatasync with --fsync/--fdatasync on a file (the psync
	// engine counts its fdatasyncs in SyncLat.N, not in Syncs).
	SyncLat fioLat
}

var errNoPercentile = errors.New("fio reported no median latency")

// FlushP50 returns the median latency of the job's syncs (with the nbd
// engine: of its NBD_CMD_FLUSH requests) in microseconds.
func (r fioResult) FlushP50() (float64, error) {
	v, ok := r.SyncLat.p50()
	if !ok {
		return 0, fmt.Errorf("%w: sync lat_ns", errNoPercentile)
	}
	return v / 1e3, nil
}

// WriteSyncP50 returns the median write completion latency plus the median
// sync latency in microseconds: the time of one durable write of a job run
// with --fdatasync=1 (or --fsync=1) at iodepth 1.
func (r fioResult) WriteSyncP50() (float64, error) {
	w, ok := r.Write.Clat.p50()
	if !ok {
		return 0, fmt.Errorf("%w: write clat_ns", errNoPercentile)
	}
	f, err := r.FlushP50()
	if err != nil {
		return 0, err
	}
	return w/1e3 + f, nil
}

// IOPS returns read plus write IOPS: the figure for mixed workloads.
func (r fioResult) IOPS() float64 { return r.Read.IOPS + r.Write.IOPS }

// BW returns read plus write bandwidth in bytes per second.
func (r fioResult) BW() float64 { return r.Read.BWBytes + r.Write.BWBytes }

var errFioOutput = errors.New("fio: bad json output")

// parseFioJSON decodes fio's --output-format=json. fio may print lines (such
// as the nbd engine's "connected to NBD server") before the JSON document when
// it writes to stdout, so decoding starts at the first '{'. Exactly one job is
// expected (the harness never sets numjobs); a job that reports an error is an
// error.
func parseFioJSON(data []byte) (fioResult, error) {
	i := bytes.IndexByte(data, '{')
	if i < 0 {
		return fioResult{}, fmt.Errorf("%w: no json object", errFioOutput)
	}
	var doc struct {
		Jobs []struct {
			Name  string `json:"jobname"`
			Error int    `json:"error"`
			Read  fioDir `json:"read"`
			Write fioDir `json:"write"`
			Sync  struct {
				TotalIOs int64  `json:"total_ios"`
				Lat      fioLat `json:"lat_ns"`
			} `json:"sync"`
		} `json:"jobs"`
	}
	dec := json.NewDecoder(bytes.NewReader(data[i:]))
	if err := dec.Decode(&doc); err != nil {
		return fioResult{}, fmt.Errorf("%w: %w", errFioOutput, err)
	}
	if len(doc.Jobs) != 1 {
		return fioResult{}, fmt.Errorf("%w: %d jobs, want 1", errFioOutput, len(doc.Jobs))
	}
	j := doc.Jobs[0]
	if j.Error != 0 {
		return fioResult{}, fmt.Errorf("fio job %q: error %d", j.Name, j.Error)
	}
	for _, d := range []fioDir{j.Read, j.Write} {
		if d.IOPS < 0 || d.BWBytes < 0 || d.IOBytes < 0 || d.TotalIOs < 0 {
			return fioResult{}, fmt.Errorf("%w: negative figure in job %q", errFioOutput, j.Name)
		}
	}
	for _, l := range []fioLat{j.Read.Clat, j.Write.Clat, j.Sync.Lat} {
		for _, v := range l.Percentile {
			if v < 0 || math.IsNaN(v) {
				return fioResult{}, fmt.Errorf("%w: negative latency in job %q", errFioOutput, j.Name)
			}
		}
	}
	return fioResult{Read: j.Read, Write: j.Write, Syncs: j.Sync.TotalIOs, SyncLat: j.Sync.Lat}, nil
}

// fioJob describes one fio job; args turns it into a command line.
type fioJob struct {
	Name      string
	RW        string // fio rw=, e.g. randwrite, randwrite:16, randrw
	BS        int64
	Depth     int
	Fsync     int   // fsync=N (0: none)
	Fdatasync int   // fdatasync=N (0: none)
	MixRead   int   // rwmixread= for randrw
	Size      int64 // region size in bytes
	IOSize    int64 // io_size= (0: one pass of Size, or time based)
	Runtime   time.Duration
	Ramp      time.Duration
	Seed      int64 // randseed; 0 keeps fio's default
	RandMap   bool  // keep fio's random map (every block once); else norandommap
	URI       string
	Filename  string // for file jobs (physical limit); URI must be empty
	Direct    bool
	Engine    string // for file jobs: libaio, psync...
}

// args returns fio's arguments for j, writing JSON to out.
func (j fioJob) args(out string) []string {
	a := []string{
		"--name=" + j.Name,
		"--rw=" + j.RW,
		"--bs=" + strconv.FormatInt(j.BS, 10),
		"--iodepth=" + strconv.Itoa(j.Depth),
		"--size=" + strconv.FormatInt(j.Size, 10),
		"--output-format=json",
		"--output=" + out,
	}
	if j.URI != "" {
		a = append(a, "--ioengine=nbd", "--uri="+j.URI)
	} else {
		a = append(a, "--filename="+j.Filename, "--ioengine="+j.Engine)
		if j.Direct {
			a = append(a, "--direct=1")
		}
	}
	if j.Runtime > 0 {
		a = append(a, "--time_based", fmt.Sprintf("--runtime=%dms", j.Runtime.Milliseconds()))
		if j.Ramp > 0 {
			a = append(a, fmt.Sprintf("--ramp_time=%dms", j.Ramp.Milliseconds()))
		}
	}
	if j.IOSize > 0 {
		a = append(a, "--io_size="+strconv.FormatInt(j.IOSize, 10))
	}
	if j.Fsync > 0 {
		a = append(a, "--fsync="+strconv.Itoa(j.Fsync))
	}
	if j.Fdatasync > 0 {
		a = append(a, "--fdatasync="+strconv.Itoa(j.Fdatasync))
	}
	if j.MixRead > 0 {
		a = append(a, "--rwmixread="+strconv.Itoa(j.MixRead))
	}
	if j.Seed != 0 {
		a = append(a, "--randrepeat=0", "--randseed="+strconv.FormatInt(j.Seed, 10))
	}
	if !j.RandMap {
		a = append(a, "--norandommap")
	}
	return a
}
