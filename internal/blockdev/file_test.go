package blockdev

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/writeboost/writeboost/internal/blockdev/uring"
	"golang.org/x/sys/unix"
)

// directDir is a directory whose filesystem takes O_DIRECT (ext4 or xfs
// under /var/tmp on the build machines; tmpfs only since Linux 6.6).
func directDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("/var/tmp", "blockdev-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func makeFile(t testing.TB, dir string, size int64) string {
	t.Helper()
	path := filepath.Join(dir, "dev.img")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	return path
}

func openT(t *testing.T, path string, opts FileOptions) *File {
	t.Helper()
	d, err := OpenFile(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func TestFileDirectReadWrite(t *testing.T) {
	path := makeFile(t, directDir(t), 1<<20)
	d := openT(t, path, FileOptions{Direct: true})
	if !d.Direct() {
		t.Fatalf("%s: O_DIRECT refused under /var/tmp", path)
	}
	if d.Size() != 1<<20 || d.BlockDevice() || d.Path() != path {
		t.Fatalf("Size %d BlockDevice %v Path %q", d.Size(), d.BlockDevice(), d.Path())
	}
	// Aligned: the engine's case.
	p := AlignedBuffer(8192)
	copy(p, pattern(1, 8192))
	mustWrite(t, d, 4096, p)
	if got := mustRead(t, d, 4096, 8192); !bytes.Equal(got[:], p) {
		t.Fatal("aligned round trip differs")
	}
	// Misaligned memory, aligned offset: a bounce copy.
	raw := AlignedBuffer(4097)
	q := raw[1:]
	copy(q, pattern(2, 4096))
	mustWrite(t, d, 65536, q)
	back := AlignedBuffer(4097)[1:]
	if _, err := d.ReadAt(back, 65536); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back, q) {
		t.Fatal("misaligned-buffer round trip differs")
	}
	// Misaligned offset and length: read-modify-write must keep the
	// neighbouring bytes of the aligned blocks.
	r := pattern(3, 1000)
	mustWrite(t, d, 4096+100, r)
	want := append([]byte(nil), p...)
	copy(want[100:], r)
	if got := mustRead(t, d, 4096, 8192); !bytes.Equal(got, want) {
		t.Fatal("read-modify-write lost neighbouring bytes")
	}
	if got := mustRead(t, d, 4096+100, 1000); !bytes.Equal(got, r) {
		t.Fatal("unaligned read differs")
	}
	// A write spanning several blocks with partial ends.
	s := pattern(4, 20000)
	mustWrite(t, d, 200000+7, s)
	if got := mustRead(t, d, 200000+7, len(s)); !bytes.Equal(got, s) {
		t.Fatal("multi-block unaligned round trip differs")
	}
	// What the kernel has is what we wrote: read through the page cache.
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	img, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(img[4096:4096+8192], want) || !bytes.Equal(img[200007:200007+20000], s) {
		t.Fatal("file contents differ from what was written")
	}
}

// TestFileUnalignedConcurrent has goroutines write interleaved 64-byte
// pieces of the same sectors: read-modify-write must not lose any.
func TestFileUnalignedConcurrent(t *testing.T) {
	path := makeFile(t, directDir(t), 64<<10)
	d := openT(t, path, FileOptions{Direct: true})
	const pieces, size = 32, 64
	var wg sync.WaitGroup
	for g := range pieces {
		wg.Go(func() {
			for round := range 5 {
				p := bytes.Repeat([]byte{byte(g + round*pieces)}, size)
				if _, err := d.WriteAt(p, int64(g*size)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	got := mustRead(t, d, 0, pieces*size)
	for g := range pieces {
		want := bytes.Repeat([]byte{byte(g + 4*pieces)}, size)
		if !bytes.Equal(got[g*size:(g+1)*size], want) {
			t.Fatalf("piece %d lost: %v", g, got[g*size:g*size+4])
		}
	}
}

func TestFileEOFAndBounds(t *testing.T) {
	for _, direct := range []bool{false, true} {
		path := makeFile(t, directDir(t), 8192)
		d := openT(t, path, FileOptions{Direct: direct})
		buf := AlignedBuffer(4096)
		if n, err := d.ReadAt(buf, 6144); n != 2048 || err != io.EOF {
			t.Fatalf("direct=%v read across the end: n=%d err=%v, want 2048, EOF", direct, n, err)
		}
		if n, err := d.ReadAt(buf, 8192); n != 0 || err != io.EOF {
			t.Fatalf("direct=%v read at the end: n=%d err=%v", direct, n, err)
		}
		if _, err := d.ReadAt(buf, -512); !errors.Is(err, ErrOutOfRange) {
			t.Fatalf("read at -512: %v", err)
		}
		_, err := d.WriteAt(buf, 6144)
		if !errors.Is(err, ErrOutOfRange) {
			t.Fatalf("write across the end: %v", err)
		}
		if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "6144") {
			t.Fatalf("error %q does not name the path and offset", err)
		}
		if st, _ := os.Stat(path); st.Size() != 8192 {
			t.Fatalf("file grew to %d", st.Size())
		}
		if err := d.Discard(4096, 8192); !errors.Is(err, ErrOutOfRange) {
			t.Fatalf("discard across the end: %v", err)
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := d.ReadAt(buf, 0); !errors.Is(err, ErrClosed) {
			t.Fatalf("read after close: %v", err)
		}
		if _, err := d.WriteAt(buf, 0); !errors.Is(err, ErrClosed) {
			t.Fatalf("write after close: %v", err)
		}
		if err := d.Sync(); !errors.Is(err, ErrClosed) {
			t.Fatalf("sync after close: %v", err)
		}
		if err := d.Discard(0, 4096); !errors.Is(err, ErrClosed) {
			t.Fatalf("discard after close: %v", err)
		}
	}
}

func TestFileReadOnly(t *testing.T) {
	path := makeFile(t, t.TempDir(), 8192)
	if err := os.WriteFile(path, pattern(5, 8192), 0o600); err != nil {
		t.Fatal(err)
	}
	d := openT(t, path, FileOptions{ReadOnly: true})
	if got := mustRead(t, d, 512, 1024); !bytes.Equal(got, pattern(5, 8192)[512:1536]) {
		t.Fatal("read-only read differs")
	}
	if _, err := d.WriteAt(make([]byte, 512), 0); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("write on read-only: %v", err)
	}
	if err := d.Discard(0, 512); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("discard on read-only: %v", err)
	}
	if err := d.Sync(); err != nil {
		t.Fatalf("sync on read-only: %v", err)
	}
}

func TestFileNotADevice(t *testing.T) {
	if _, err := OpenFile(t.TempDir(), FileOptions{}); !errors.Is(err, ErrNotSupported) {
		t.Fatalf("open of a directory: %v", err)
	}
	if _, err := OpenFile("/dev/null", FileOptions{}); !errors.Is(err, ErrNotSupported) {
		t.Fatalf("open of a character device: %v", err)
	}
	_, err := OpenFile(filepath.Join(t.TempDir(), "missing"), FileOptions{})
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("open of a missing file: %v", err)
	}
}

// TestFileDirectFallback simulates a filesystem that refuses O_DIRECT:
// the open succeeds without it, logs one line, and Direct says so.
func TestFileDirectFallback(t *testing.T) {
	orig := openFile
	t.Cleanup(func() { openFile = orig })
	openFile = func(name string, flag int, perm fs.FileMode) (*os.File, error) {
		if flag&unix.O_DIRECT != 0 {
			return nil, &fs.PathError{Op: "open", Path: name, Err: syscall.EINVAL}
		}
		return orig(name, flag, perm)
	}
	var logBuf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logBuf, nil))
	path := makeFile(t, t.TempDir(), 16384)
	d := openT(t, path, FileOptions{Direct: true, Logger: log})
	if d.Direct() {
		t.Fatal("Direct() = true after the filesystem refused O_DIRECT")
	}
	if lines := strings.Count(logBuf.String(), "\n"); lines != 1 || !strings.Contains(logBuf.String(), path) {
		t.Fatalf("want one log line naming %s, got %q", path, logBuf.String())
	}
	p := pattern(6, 1000)
	mustWrite(t, d, 3, p)
	if got := mustRead(t, d, 3, 1000); !bytes.Equal(got, p) {
		t.Fatal("round trip after fallback differs")
	}
}

// TestFileDirectTmpfs opens a file on tmpfs, which (since Linux 6.6) takes
// O_DIRECT but reports no STATX_DIOALIGN: the conservative 4096 alignment
// applies. Whichever way the kernel goes, I/O must work.
func TestFileDirectTmpfs(t *testing.T) {
	dir, err := os.MkdirTemp("/dev/shm", "blockdev-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	d := openT(t, makeFile(t, dir, 1<<16), FileOptions{Direct: true, Logger: slog.New(slog.DiscardHandler)})
	t.Logf("tmpfs: Direct()=%v mem_align=%d offset_align=%d", d.Direct(), d.memAlign, d.offAlign)
	p := pattern(7, 5000)
	mustWrite(t, d, 777, p)
	if got := mustRead(t, d, 777, len(p)); !bytes.Equal(got, p) {
		t.Fatal("tmpfs round trip differs")
	}
}

func TestFileExclusive(t *testing.T) {
	path := makeFile(t, t.TempDir(), 8192)
	d := openT(t, path, FileOptions{Exclusive: true})
	_, err := OpenFile(path, FileOptions{Exclusive: true})
	if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), path) {
		t.Fatalf("second exclusive open: %v, want ErrBusy naming %s", err, path)
	}
	_, err = OpenFile(path, FileOptions{Exclusive: true, ReadOnly: true, Direct: true})
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("second exclusive read-only open: %v, want ErrBusy", err)
	}
	// A shared open is not refused (tools like wb-check read a live cache).
	s, err := OpenFile(path, FileOptions{ReadOnly: true})
	if err != nil {
		t.Fatalf("shared open beside an exclusive one: %v", err)
	}
	s.Close()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	e, err := OpenFile(path, FileOptions{Exclusive: true})
	if err != nil {
		t.Fatalf("exclusive open after Close: %v", err)
	}
	e.Close()
}

func TestFileDiscardPunchesHole(t *testing.T) {
	for _, dir := range []string{directDir(t), t.TempDir()} {
		path := makeFile(t, dir, 1<<20)
		d := openT(t, path, FileOptions{Direct: true, Logger: slog.New(slog.DiscardHandler)})
		p := AlignedBuffer(1 << 20)
		copy(p, pattern(8, 1<<20))
		mustWrite(t, d, 0, p)
		if err := d.Sync(); err != nil {
			t.Fatal(err)
		}
		before := allocated(t, path)
		if err := d.Discard(256<<10, 512<<10); err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		after := allocated(t, path)
		if after > before-(512<<10) {
			t.Fatalf("%s: allocated %d -> %d bytes; the hole was not punched", dir, before, after)
		}
		got := mustRead(t, d, 0, 1<<20)
		if !bytes.Equal(got[256<<10:768<<10], make([]byte, 512<<10)) {
			t.Fatal("discarded range does not read as zeros")
		}
		if !bytes.Equal(got[:256<<10], p[:256<<10]) || !bytes.Equal(got[768<<10:], p[768<<10:]) {
			t.Fatal("discard changed data outside its range")
		}
		if d.Size() != 1<<20 {
			t.Fatal("discard changed the size")
		}
	}
}

func allocated(t *testing.T, path string) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// TestLoopDevice runs File against a real block device: a loop device over
// a sparse file. Needs root (losetup), as the project's CI has.
func TestLoopDevice(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("losetup needs root")
	}
	const size = 8 << 20
	img := makeFile(t, directDir(t), size)
	out, err := exec.Command("losetup", "-f", "--show", img).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup -f --show %s: %v: %s", img, err, out)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", loop).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", loop, err, out)
		}
	})

	d := openT(t, loop, FileOptions{Direct: true, Exclusive: true})
	if !d.BlockDevice() {
		t.Fatalf("%s: BlockDevice() = false", loop)
	}
	if d.Size() != size {
		t.Fatalf("%s: BLKGETSIZE64 gave %d, want %d", loop, d.Size(), size)
	}
	t.Logf("%s: Direct()=%v mem_align=%d offset_align=%d", loop, d.Direct(), d.memAlign, d.offAlign)

	// O_EXCL: a second exclusive open is refused, by the kernel.
	if _, err := OpenFile(loop, FileOptions{Exclusive: true}); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), loop) {
		t.Fatalf("second exclusive open of %s: %v, want ErrBusy", loop, err)
	}
	if _, err := os.OpenFile(loop, os.O_RDONLY|unix.O_EXCL, 0); !errors.Is(err, syscall.EBUSY) {
		t.Fatalf("raw O_EXCL open beside ours: %v, want EBUSY (the claim is the kernel's)", err)
	}

	p := AlignedBuffer(1 << 20)
	copy(p, pattern(9, 1<<20))
	mustWrite(t, d, 2<<20, p)
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, d, 2<<20, 1<<20); !bytes.Equal(got, p) {
		t.Fatal("loop round trip differs")
	}
	q := pattern(10, 700)
	mustWrite(t, d, 5<<20-300, q)
	if got := mustRead(t, d, 5<<20-300, 700); !bytes.Equal(got, q) {
		t.Fatal("unaligned loop round trip differs")
	}
	n, err := d.ReadAt(make([]byte, 8192), size-4096)
	if n != 4096 || err != io.EOF {
		t.Fatalf("read across the end of %s: n=%d err=%v", loop, n, err)
	}

	if err := d.Discard(2<<20, 512<<10); err != nil {
		t.Fatalf("BLKDISCARD: %v", err)
	}
	// A loop device discards by punching the backing file: zeros.
	if got := mustRead(t, d, 2<<20, 512<<10); !bytes.Equal(got, make([]byte, 512<<10)) {
		t.Fatal("discarded loop range does not read as zeros")
	}
	if got := mustRead(t, d, 2<<20+512<<10, 512<<10); !bytes.Equal(got, p[512<<10:]) {
		t.Fatal("discard changed data past its range")
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	e, err := OpenFile(loop, FileOptions{Exclusive: true})
	if err != nil {
		t.Fatalf("exclusive open of %s after Close: %v", loop, err)
	}
	e.Close()
}

// TestFileDirectUnalignedSize: O_DIRECT cannot write the partial last block
// of a file whose size is not a multiple of the alignment without growing
// it, so such a file is served through the page cache, with a log line.
func TestFileDirectUnalignedSize(t *testing.T) {
	var logBuf bytes.Buffer
	path := makeFile(t, directDir(t), 8192+100)
	d := openT(t, path, FileOptions{Direct: true, Logger: slog.New(slog.NewTextHandler(&logBuf, nil))})
	if d.Direct() {
		t.Fatal("Direct() = true for a size that is not a multiple of the alignment")
	}
	if !strings.Contains(logBuf.String(), "size not a multiple") {
		t.Fatalf("log %q does not say why O_DIRECT was dropped", logBuf.String())
	}
	p := pattern(11, 200)
	mustWrite(t, d, 8192-100, p)
	if got := mustRead(t, d, 8192-100, 200); !bytes.Equal(got, p) {
		t.Fatal("tail round trip differs")
	}
	if st, _ := os.Stat(path); st.Size() != 8192+100 {
		t.Fatalf("file size changed to %d", st.Size())
	}
}

// TestFileAsyncReads: ReadAtAsync of an O_DIRECT file with io_uring goes
// through native AIO when opened with AsyncReads (IOEngine says
// io_uring+aio) and through the ring without it; both return the file's
// bytes, in bursts of one Unplug each, after Close too (refused).
func TestFileAsyncReads(t *testing.T) {
	skipWithoutIOUring(t)
	for _, c := range []struct {
		async bool
		want  string
	}{{true, "io_uring+aio"}, {false, "io_uring"}} {
		t.Run(c.want, func(t *testing.T) {
			path := makeFile(t, directDir(t), 1<<20)
			data := make([]byte, 1<<20)
			for i := range data {
				data[i] = byte(i*7 + i>>12)
			}
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			d, err := OpenFile(path, FileOptions{Direct: true, IO: IOUring, AsyncReads: c.async})
			if err != nil {
				t.Fatal(err)
			}
			if !d.Direct() {
				d.Close()
				t.Fatalf("%s: O_DIRECT refused under /var/tmp", path)
			}
			if got := d.IOEngine(); got != c.want {
				t.Errorf("IOEngine %q, want %q", got, c.want)
			}
			for burst := range 20 {
				var wg sync.WaitGroup
				errs := make(chan error, 32)
				for i := range 32 {
					off := int64((burst*131+i*37)%(len(data)/4096-4)) * 4096
					p := AlignedBuffer(4096 * (1 + i%4))
					wg.Add(1)
					if !d.ReadAtAsync(p, off, func(err error) {
						defer wg.Done()
						if err == nil && !bytes.Equal(p, data[off:off+int64(len(p))]) {
							err = errors.New("other bytes than the file's")
						}
						if err != nil {
							errs <- err
						}
					}) {
						t.Fatalf("ReadAtAsync of %d bytes at %d declined", len(p), off)
					}
				}
				d.Unplug()
				wg.Wait()
				close(errs)
				for err := range errs {
					t.Fatal(err)
				}
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			if d.ReadAtAsync(AlignedBuffer(4096), 0, func(error) { t.Error("callback after Close") }) {
				t.Error("ReadAtAsync after Close started a read")
			}
		})
	}
}

// TestFileAsyncReadsNotDirect: a file that loses O_DIRECT at open (a size
// the direct I/O alignment does not divide) keeps the ring's reads even
// with AsyncReads, since its AIO reads would complete inside io_submit.
func TestFileAsyncReadsNotDirect(t *testing.T) {
	skipWithoutIOUring(t)
	d := openT(t, makeFile(t, directDir(t), 1<<20+100), FileOptions{Direct: true, IO: IOUring, AsyncReads: true})
	if d.Direct() {
		t.Fatal("a size of 1 MiB + 100 bytes kept O_DIRECT")
	}
	if got := d.IOEngine(); got != "io_uring" {
		t.Errorf("IOEngine %q, want io_uring", got)
	}
}

// skipWithoutIOUring skips where the kernel does not let every process use
// io_uring (uring.KernelAllows); CI's kernel does.
func skipWithoutIOUring(t *testing.T) {
	t.Helper()
	if ok, why := uring.KernelAllows(); !ok {
		t.Skipf("the kernel does not allow io_uring here: %s", why)
	}
}
