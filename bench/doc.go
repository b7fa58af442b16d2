// Command bench measures writeboost against the physical limit of the cache
// file and against the peers a user would otherwise run, side by side, on the
// same machine in the same run (issue 7).
//
//	go run ./bench [--quick] [--out FILE.json]
//
// Absolute numbers on a shared 2-core machine drift by 2x between runs, so
// every figure is reported as the median of at least three runs with its
// min-max, next to a reference measured in the same run, and the ratio is what
// the targets judge. The references:
//
//   - physical limit: fio with O_DIRECT on a file in the same temporary
//     directory as the cache files (libaio: 512 KiB sequential write
//     bandwidth, 4 KiB random write IOPS, 1 MiB sequential read bandwidth,
//     4 KiB random read IOPS at QD32; psync at QD1: the median latency of a
//     4 KiB random write followed by fdatasync, row
//     physical/write-fdatasync-4k in µs, lower is better, the median write
//     completion (write clat_ns p50) plus the median fdatasync (sync lat_ns
//     p50) of fio's JSON; and the same for one 132 KiB sequential write,
//     physical/write-fdatasync-132k: what a FLUSH after 32 new 4 KiB writes
//     must make durable at least, 32 blocks and their segment header);
//   - NBD transport ceiling: nbdkit memory, driven by the same fio nbd job;
//   - durable direct server: qemu-nbd --cache=none --aio=native on the
//     physical-limit file; the ratio column of "writeboost (files)" for
//     1 MiB sequential writes and 4 KiB read hits, which shows how much of
//     the device an independent C server keeps through the same transport
//     on the same cores (issue 16);
//   - user-space peer cache: nbdkit --filter=cache in front of the emulated HDD;
//   - slow backing device: the emulated HDD (nbdkit file behind the limit,
//     multi-conn, rate and delay filters), exposed to writeboost as a file
//     with nbdfuse, and the same disk given to writeboost directly as an
//     nbd+unix URI (its own NBD client, no FUSE hop; issue 15). The direct
//     subject, "writeboost (HDD over NBD)", is judged against the nbdfuse
//     one (targets N1): no slower on the 4 KiB random writes, cold reads
//     and writeback drain rates, and dense random writeback in at most
//     half the backing requests per block (see below).
//
// The NBD workloads run in epochs (cold reads; FLUSH every 32 writes; QD1
// writes; QD32 writes and the 70/30 mix; 1 MiB writes, cached reads, 1 MiB
// reads); writeboost volumes and the cache filter restart on fresh caches at
// each epoch so that no workload pays for another's dirty data. The
// writeback phase builds a fresh stack per run (emulated disk with nbdkit's
// stats filter, nbdfuse or not, wb-create), both transports round robin,
// and writes one pattern of 4 KiB blocks
// (dense: every block of a region, in random order; clustered: 64 KiB runs at
// random offsets; scattered: single blocks), and times drop_caches. A
// writeback batch is nr_max_batched_writeback segments (16 MiB by default)
// at most, but under drop_caches the planner looks up to 224 segments
// further and lengthens the batch's runs with what it finds there
// (docs/design.md, "Looking ahead"), so a dense region larger than a
// batch goes back in a few long writes. The unsorted-4k reference is the
// NBD phase's randwrite-qd32 on the emulated disk; with --only writeback
// the writeback phase runs that fio job itself.
//
// N1 asked until issue 16 a dense drain rate over NBD of at least 2x
// nbdfuse's. Since the look-ahead planner a dense region goes back in a few
// long writes: in the full run of 2026-11-27, 24 MiB drained in 25 writes
// of about 1 MiB through nbdfuse (FUSE's max_write cuts every longer
// write) and in 2 writes directly, in 0.19 s and 0.15 s, 130 and 170 MB/s,
// against the emulated disk's rate limit of 1200 Mbit/s (150 MB/s, plus
// a burst allowance). Both drains are bound by the disk's bandwidth, so no
// transport can be twice as fast as one already at 0.87 of the cap, and a
// larger region would not bring the 2x back (the cap is a rate): the 1.3x
// measured is the per-request cost of 23 more requests, and the drains are
// short enough (0.15-0.2 s) for fixed costs to weigh. The dense drain rate
// is therefore judged "no slower" (>= 1x, as clustered and scattered), and
// what the transport itself decides, the number of requests that carry the
// bytes, is judged on the rows writeback/dense/requests(/nbd): backing
// write requests per 4 KiB block over NBD <= 0.5x nbdfuse's (0.08x in that
// run). The rate rows and P4/R16 on them are unchanged.
//
// Engine-only figures come from internal/engine's Go benchmarks
// (BenchmarkRandomWrite4K, BenchmarkReplay1GiB, BenchmarkOpenIndexMemory16GiB,
// or names that match), compiled once with go test -c and run -count=3; a
// benchmark that does not exist is reported missing.
//
// On two shared cores a full run takes about 10-11 minutes, --quick about 3.
//
// Every process is started by the harness with its own process group and a
// parent-death signal, tracked by PID, and stopped by PID (SIGTERM, then
// SIGKILL) in reverse start order on exit or interrupt. Everything lives in
// one temporary directory, removed at the end unless --keep. Backing files
// are sparse; every writeboost cache file is laid out (written with zeros
// and synced, laidOut), as an SSD has no holes and as fio lays out the
// physical references' file: on a sparse cache file the first write into
// each hole pays the file system's allocation and a FLUSH its journal
// commit, a cost of the image file, not of writeboost (measured here: a 4
// KiB write + fdatasync ~250-300 µs on a fresh sparse file against ~120 µs
// laid out). Runs before 2026-11-27 had sparse cache files.
//
// fio's --fsync=N with the nbd engine sends NBD_CMD_FLUSH; with iodepth 1 it
// sends exactly one per N writes, but with iodepth > 1 fio 3.33 re-issues the
// flush while writes are in flight (about one flush per write), so the
// FLUSH-every-32 workload runs at iodepth 1. The harness checks the ratio
// against nbdkit's stats filter in every run. That workload records a
// second row per subject, nbd/randwrite-flush32-qd1-flush-p50/SUBJECT: the
// median latency of its NBD_CMD_FLUSH requests in µs (fio's sync lat_ns
// p50, median of the runs), referenced to
// physical/write-fdatasync-4k@randwrite-flush32-qd1 (below). fio
// starts a FLUSH's clock once the request is submitted (against nbdkit
// memory the p50 is about 4 µs), so the figure is the server's time to make
// the writes durable and reply, not the client's cost of sending. The
// qemu-nbd row is the floor a server on this file can reach through NBD:
// its writes (O_DIRECT, --aio=native) are on the file before their reply,
// so its FLUSH is one fdatasync and nothing else (1.30-1.74x the
// reference in three runs on 2026-11-28; docs/design.md, "FLUSH and FUA").
//
// Targets R16 are issue 16's "Figures to reach", all on the files subject
// (writeboost on files, no slow device under it) and all in one run,
// quick or full. Those against the cache file's own figures use the
// figure taken again between the workload's runs (each repetition runs the
// physical job once before the subjects: rows physical/KEY@WORKLOAD, each
// referenced to the physical phase's row), since on a shared host the
// device drifts in the minutes between the physical phase and the
// workload (a 512 KiB sequential write: 2105, 2348 and 2450 MB/s in three
// runs of 2026-11-28, while writeboost's 1 MiB writes read 0.69-1.01x of
// it): read hits 4 KiB QD32 (randread-cached-qd32) >= 0.8x the
// cache file's libaio 4 KiB random reads at QD32 and >= 0.8x nbdkit
// memory's "where the device is faster than the transport" (the issue's
// words: that target has a condition, When, and is "n/a" in a run where
// the file's libaio reads are not above nbdkit memory's, since the device
// is then the ceiling the first target already judges against); 1 MiB sequential writes at QD4 >= 0.8x the file's 512 KiB
// sequential O_DIRECT writes (this was target "dev"); FLUSH every 32 writes
// >= 0.6x the plain QD1 rate; the median FLUSH latency <= 1.2x the file's
// own 4 KiB write + fdatasync; dense random writeback to the emulated HDD
// >= 3x the unsorted 4 KiB drain rate (P4 keeps its 5x). --quick runs the
// files subject on every workload these need. A target whose rows a mode
// does not measure is marked full_only (N1's cold reads) and reported as
// such in a quick run; a unit test checks that every other target names
// rows the run records, in both modes.
package main
