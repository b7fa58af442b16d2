package engine

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/writeboost/writeboost/internal/check"
)

// writebackWritten forces writeback of every segment written to the cache
// device when called, without sealing or flushing anything: what the
// writeback daemon does on its own at writeback_threshold 100, made
// deterministic.
func (v *Volume) writebackWritten() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.forceWritebackLocked(context.Background(), v.mu.lastWritten)
}

// writebackWritten is Volume.writebackWritten followed by the superblock
// record, as sbRecordUpdater writes it.
func (r *rig) writebackWritten() {
	r.t.Helper()
	if err := r.v.writebackWritten(); err != nil {
		r.t.Fatal(err)
	}
	if err := r.v.writeRecord(); err != nil {
		r.t.Fatal(err)
	}
}

// TestFlushedCopyOutlivesUnflushedOverwrite is issue 17's sequence: block
// 100 = A, FLUSH; block 100 = B without FLUSH (B sits in a rambuf); the
// segment holding A is written back and recorded; crash. The volume must
// read A or B after the restart, and so must the backing device alone
// after drop_caches, whatever the overwrite was: a full block, a few
// sectors, a merge of two partial writes, WRITE_ZEROES or TRIM.
func TestFlushedCopyOutlivesUnflushedOverwrite(t *testing.T) {
	const block = 100
	const off = block * 4096
	a := fill(4096, 'A')
	cases := []struct {
		name      string
		overwrite func(r *rig)
		b         []byte // what the block reads after the overwrite; nil: trimmed
	}{
		{"full block", func(r *rig) { r.write(off, fill(4096, 'B')) }, fill(4096, 'B')},
		{"two sectors", func(r *rig) { r.write(off+1024, fill(1024, 'B')) },
			append(append(fill(1024, 'A'), fill(1024, 'B')...), fill(2048, 'A')...)},
		{"two partial writes merged", func(r *rig) {
			r.write(off, fill(512, 'B'))
			r.write(off+3584, fill(512, 'B'))
		}, append(append(fill(512, 'B'), fill(3072, 'A')...), fill(512, 'B')...)},
		{"write zeroes", func(r *rig) {
			if err := r.v.WriteZeroes(off, 4096, false); err != nil {
				t.Fatal(err)
			}
		}, make([]byte, 4096)},
		{"trim", func(r *rig) {
			if err := r.v.Trim(off, 4096); err != nil {
				t.Fatal(err)
			}
		}, nil},
	}
	for _, c := range cases {
		for _, sealed := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/sealed=%v", c.name, sealed), func(t *testing.T) {
				r := newRig(t, 4, 1<<20, nil)
				r.write(off, a)
				r.flush()
				c.overwrite(r)
				if sealed {
					// B's segment sealed, even written, but not synced.
					r.write(0, fill(4096, 'x'))
					r.v.mu.Lock()
					r.v.sealLocked()
					r.v.mu.Unlock()
				}
				r.writebackWritten()
				r.crash(nil)
				okBlock := func(got []byte) bool {
					return bytes.Equal(got, a) || (c.b != nil && bytes.Equal(got, c.b)) ||
						(c.b == nil && bytes.Equal(got, make([]byte, 4096)))
				}
				// Offline rescue (wb-check --writeback) on copies of the
				// crashed devices: the backing device alone holds A or B.
				{
					cache, backing := r.cache.CrashClone(), r.backing.CrashClone()
					res, err := check.Check(cache, cache.Size(), check.Options{})
					if err != nil {
						t.Fatal(err)
					}
					if _, err := check.Writeback(cache, backing, res, check.WritebackOptions{}); err != nil {
						t.Fatal(err)
					}
					back := make([]byte, 4096)
					if _, err := backing.ReadAt(back, off); err != nil {
						t.Fatal(err)
					}
					if !okBlock(back) {
						t.Fatalf("after wb-check --writeback the backing device holds %q... at block %d, want A or B", back[:16], block)
					}
				}
				r.open()
				if got := r.read(off, 4096); !okBlock(got) {
					t.Fatalf("after the restart block %d reads %q..., want A or B", block, got[:16])
				}
				if err := r.v.DropCaches(context.Background()); err != nil {
					t.Fatal(err)
				}
				back := make([]byte, 4096)
				if _, err := r.backing.ReadAt(back, off); err != nil {
					t.Fatal(err)
				}
				if !okBlock(back) {
					t.Fatalf("after drop_caches the backing device holds %q... at block %d, want A or B", back[:16], block)
				}
				// Reuse every ring slot: the volume reads what the backing holds.
				for i := range 4 * 127 {
					r.write(int64(1+i%64)*4096+512*1024, fill(4096, byte(i)))
				}
				r.flush()
				if got := r.read(off, 4096); !okBlock(got) {
					t.Fatalf("after the ring wrapped block %d reads %q..., want A or B", block, got[:16])
				}
			})
		}
	}
}
