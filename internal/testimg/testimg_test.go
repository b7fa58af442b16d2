package testimg

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"
)

// naive is a deliberately simple reader of an image, written from
// docs/format.md and the kernel's replay (apply_valid_segments with
// invalidate_previous_cache writing an older dirty copy back before a
// partial copy replaces it): it checks that what the generator claims
// is what the bytes say.
type naive struct {
	formatted                          bool
	maxID, flushed, lwb, record, badID uint64
	valid, dirty                       int
	volume                             []byte
}

func readNaive(t *testing.T, path string, backing []byte) naive {
	t.Helper()
	img, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var r naive
	if len(img) < superSize+segSize {
		return r
	}
	if binary.LittleEndian.Uint32(img) != magic {
		return r
	}
	r.formatted = true
	r.record = binary.LittleEndian.Uint64(img[recordOffset:])
	nr := uint64((len(img)/sectorSize - 2048) / 1024)
	seg := func(slot uint64) []byte { return img[superSize+int(slot)*segSize:][:segSize] }
	for s := range nr {
		r.maxID = max(r.maxID, binary.LittleEndian.Uint64(seg(s)))
	}
	var valid [][]byte
	for i := range nr {
		s := seg((r.maxID + i) % nr)
		id := binary.LittleEndian.Uint64(s)
		if id == 0 {
			continue
		}
		n := int(s[12])
		if n > nrCaches || crc32.Checksum(s[512:blockSize*(1+n)], castagnoli) != binary.LittleEndian.Uint32(s[8:]) {
			r.badID = id
			break
		}
		valid = append(valid, s)
		r.flushed = id
	}
	r.valid = len(valid)
	r.lwb = r.record
	if r.flushed > nr {
		r.lwb = max(r.lwb, r.flushed-nr)
	}
	r.lwb = min(r.lwb, r.flushed)

	type cp struct {
		data []byte
		bits uint8
	}
	vol := append([]byte(nil), backing...)
	put := func(block uint64, c cp) {
		for j := range sectorsPerBlock {
			if c.bits&(1<<j) != 0 {
				copy(vol[block*blockSize+uint64(j)*sectorSize:][:sectorSize], c.data[j*sectorSize:][:sectorSize])
			}
		}
	}
	hash := map[uint64]cp{}
	for _, s := range valid {
		id := binary.LittleEndian.Uint64(s)
		for i := range int(s[12]) {
			mb := s[mbOffset+mbSize*i:]
			block := binary.LittleEndian.Uint64(mb) / sectorsPerBlock
			c := cp{data: s[blockSize*(i+1):][:blockSize], bits: mb[8]}
			if id <= r.lwb {
				c.bits = 0
			}
			if old, ok := hash[block]; ok && c.bits != 0xff {
				put(block, old)
			}
			hash[block] = c
		}
	}
	for block, c := range hash {
		put(block, c)
		if c.bits != 0 {
			r.dirty++
		}
	}
	r.volume = vol
	return r
}

func TestGenerateAgainstNaiveReader(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []Damage{Clean, TornNewest, TornTail, MidLogCorruption} {
		for seed := uint64(1); seed <= 4; seed++ {
			cfg := Config{Seed: seed, NrSegments: 16 + seed, TailBytes: int64(seed) * 4096,
				BackingBlocks: 300, Segments: 10 + seed*9, Damage: d}
			if d != Clean {
				cfg.Segments += 16
			}
			path := filepath.Join(dir, "cache")
			im, err := Write(path, cfg)
			if err != nil {
				t.Fatal(err)
			}
			r := readNaive(t, path, im.Backing)
			got := [...]uint64{r.maxID, r.flushed, r.lwb, r.record, uint64(r.valid), uint64(r.dirty), r.badID}
			want := [...]uint64{im.MaxID, im.LastFlushedID, im.LastWritebackID, im.SuperRecord,
				uint64(im.ValidSegments), uint64(im.NrDirtyBlocks), im.BadID}
			if got != want {
				t.Errorf("%v seed %d: naive reader (max, flushed, lwb, record, valid, dirty, bad) = %v, generator says %v",
					d, seed, got, want)
			}
			if !r.formatted || !bytes.Equal(r.volume, im.Expected) {
				t.Errorf("%v seed %d: naive writeback differs from the expected volume", d, seed)
			}
			if d == Clean && bytes.Equal(im.Backing, im.Expected) {
				t.Errorf("seed %d: nothing dirty: a fixture that cannot tell a missing writeback", seed)
			}
			st, err := os.Stat(path)
			if err != nil || st.Size() != im.CacheSize {
				t.Errorf("%v seed %d: cache file size %v, %v; want %d", d, seed, st.Size(), err, im.CacheSize)
			}
		}
	}
}

func TestGenerateDeterministic(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Seed: 7, NrSegments: 20, BackingBlocks: 200, Segments: 45}
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	ia, err := Write(a, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ib, err := Write(b, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ba, _ := os.ReadFile(a)
	bb, _ := os.ReadFile(b)
	if !bytes.Equal(ba, bb) || !bytes.Equal(ia.Expected, ib.Expected) || !bytes.Equal(ia.Backing, ib.Backing) {
		t.Fatal("same seed, different images")
	}
}

func TestDamagedVariants(t *testing.T) {
	dir := t.TempDir()
	base := Config{Seed: 3, NrSegments: 18, BackingBlocks: 256, Segments: 40}
	for _, d := range Damages() {
		cfg := base
		cfg.Damage = d
		path := filepath.Join(dir, d.String())
		im, err := Write(path, cfg)
		if err != nil {
			t.Fatalf("%v: %v", d, err)
		}
		img, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(img)) != im.CacheSize {
			t.Errorf("%v: %d bytes, image says %d", d, len(img), im.CacheSize)
		}
		hasMagic := len(img) >= 4 && binary.LittleEndian.Uint32(img) == magic
		switch d {
		case Unformatted:
			if hasMagic || im.Formatted {
				t.Errorf("%v: magic present", d)
			}
		case TruncatedSmall:
			if len(img) >= superSize+segSize {
				t.Errorf("%v: %d bytes is not too small", d, len(img))
			}
		case Truncated:
			nr := uint64((len(img)/sectorSize - 2048) / 1024)
			wrong := 0
			for s := range nr {
				id := binary.LittleEndian.Uint64(img[superSize+int(s)*segSize:])
				if id != 0 && (id-1)%nr != s {
					wrong++
				}
			}
			if wrong == 0 {
				t.Errorf("%v: every id still in its slot: the cut cannot be seen", d)
			}
		case WrongSlot:
			slot := (cfg.Segments - 5 - 1) % cfg.NrSegments
			id := binary.LittleEndian.Uint64(img[superSize+int(slot)*segSize:])
			if id != im.WrongSlotID || (id-1)%cfg.NrSegments == slot {
				t.Errorf("%v: slot %d holds id %d", d, slot, id)
			}
		default:
			if !hasMagic {
				t.Errorf("%v: no magic", d)
			}
		}
	}
}

func TestConfigValidate(t *testing.T) {
	bad := []Config{
		{NrSegments: 0, BackingBlocks: 1},
		{NrSegments: 4, BackingBlocks: 0},
		{NrSegments: 4, BackingBlocks: 1, TailBytes: segSize},
		{NrSegments: 8, BackingBlocks: 10, Segments: 20, Damage: TornNewest},
		{NrSegments: 8, BackingBlocks: 10, Segments: 8, Damage: Truncated},
		{NrSegments: 8, BackingBlocks: 10, Damage: Damage(99)},
	}
	for _, c := range bad {
		if err := c.validate(); err == nil {
			t.Errorf("%+v: accepted", c)
		}
	}
}
