package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// A tagged sector names itself: every 512-byte sector the torture client
// writes carries the sector number it belongs to and the sequence number
// of the write that put it there, so a reader can tell which write a
// sector holds (or that it holds none: garbage) without any other record.
//
//	0    8       16    24                     508   512
//	| magic | sector | seq | fill (splitmix64 stream) | crc32c of 0..508 |
const (
	sectorSize = 512
	blockSize  = 4096
	tagMagic   = "WBTORTUR"
	crcOffset  = sectorSize - 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errGarbage marks a sector that is neither all zeroes nor a valid tag.
var errGarbage = errors.New("wbtorture: garbage sector")

// putTag fills b[:512] with the tag of write seq at sector.
func putTag(b []byte, sector, seq uint64) {
	b = b[:sectorSize]
	copy(b, tagMagic)
	binary.LittleEndian.PutUint64(b[8:], sector)
	binary.LittleEndian.PutUint64(b[16:], seq)
	x := sector*0x9E3779B97F4A7C15 ^ seq
	for i := 24; i < crcOffset; i += 4 {
		x += 0x9E3779B97F4A7C15
		z := x
		z = (z ^ z>>30) * 0xBF58476D1CE4E5B9
		z = (z ^ z>>27) * 0x94D049BB133111EB
		binary.LittleEndian.PutUint32(b[i:], uint32(z^z>>31))
	}
	binary.LittleEndian.PutUint32(b[crcOffset:], crc32.Checksum(b[:crcOffset], castagnoli))
}

// readTag decodes b[:512], which was read at sector. An all-zero sector
// is seq 0 (never written, or zeroed). Anything else that is not a valid
// tag for this very sector wraps errGarbage: a torn sector, another
// sector's data (a misdirected write) or bytes nobody wrote.
func readTag(b []byte, sector uint64) (uint64, error) {
	if len(b) < sectorSize {
		return 0, fmt.Errorf("%w: %d bytes", errGarbage, len(b))
	}
	b = b[:sectorSize]
	if string(b[:8]) != tagMagic {
		for _, c := range b {
			if c != 0 {
				return 0, fmt.Errorf("%w: sector %d: no tag", errGarbage, sector)
			}
		}
		return 0, nil
	}
	if got, want := binary.LittleEndian.Uint32(b[crcOffset:]), crc32.Checksum(b[:crcOffset], castagnoli); got != want {
		return 0, fmt.Errorf("%w: sector %d: checksum %#x, want %#x (torn)", errGarbage, sector, got, want)
	}
	if s := binary.LittleEndian.Uint64(b[8:]); s != sector {
		return 0, fmt.Errorf("%w: sector %d holds the tag of sector %d (misdirected)", errGarbage, sector, s)
	}
	seq := binary.LittleEndian.Uint64(b[16:])
	if seq == 0 {
		return 0, fmt.Errorf("%w: sector %d: tag with seq 0", errGarbage, sector)
	}
	// The checksum could be forged; the fill could not: regenerate it.
	var want [sectorSize]byte
	putTag(want[:], sector, seq)
	if string(want[24:crcOffset]) != string(b[24:crcOffset]) {
		return 0, fmt.Errorf("%w: sector %d: fill does not match seq %d", errGarbage, sector, seq)
	}
	return seq, nil
}
