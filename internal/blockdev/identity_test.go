package blockdev

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// sparseFile makes a sparse file of size bytes; its path has no symlinks
// (TempDir may be under one), so Identify returns it as is.
func sparseFile(t *testing.T, dir, name string, size int64) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	return p
}

// realDir is a fresh temporary directory with its symlinks resolved.
func realDir(t *testing.T) string {
	t.Helper()
	d, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// loopAttach attaches file to a free loop device with losetup and
// detaches it when the test ends; it skips the test, saying why, where
// loop devices cannot be made.
func loopAttach(t *testing.T, file string, args ...string) string {
	t.Helper()
	out, err := exec.Command("losetup", append(append([]string{"-f", "--show"}, args...), file)...).CombinedOutput()
	if err != nil {
		t.Skipf("losetup %s: %v: %s (loop devices need root and the loop driver)", file, err, strings.TrimSpace(string(out)))
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v %s", dev, err, out)
		}
	})
	return dev
}

func mustIdentify(t *testing.T, path string) Identity {
	t.Helper()
	id, err := Identify(path)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestIdentifyFiles(t *testing.T) {
	dir := realDir(t)
	a := sparseFile(t, dir, "a.img", 32<<20)
	b := sparseFile(t, dir, "b.img", 3<<20)
	var st unix.Stat_t
	if err := unix.Stat(a, &st); err != nil {
		t.Fatal(err)
	}
	ida := mustIdentify(t, a)
	want := Identity{Path: a, Kind: KindFile, Size: 32 << 20, Dev: st.Dev, Ino: st.Ino}
	if ida.String() != want.String() || ida.Dev != want.Dev || ida.Ino != want.Ino || ida.Loop != nil || ida.Parent != nil {
		t.Fatalf("Identify(%s) = %+v, want %+v", a, ida, want)
	}
	if s := ida.String(); s != a+" (file, dev "+devString(st.Dev)+" ino "+strconv.FormatUint(st.Ino, 10)+", 32 MiB)" {
		t.Errorf("String() = %q", s)
	}

	t.Run("relative", func(t *testing.T) {
		t.Chdir(dir)
		if id := mustIdentify(t, "a.img"); id.Path != a || id.Ino != ida.Ino {
			t.Errorf("relative path: %+v", id)
		}
	})
	t.Run("symlink", func(t *testing.T) {
		link := filepath.Join(dir, "link.img")
		if err := os.Symlink("a.img", link); err != nil {
			t.Fatal(err)
		}
		id := mustIdentify(t, link)
		if id.Path != a || id.Ino != ida.Ino {
			t.Fatalf("symlink: %+v", id)
		}
		ok, why := Overlap(ida, id)
		if !ok || why != "both are "+a {
			t.Errorf("Overlap(file, its symlink) = %v %q", ok, why)
		}
	})
	t.Run("hard link", func(t *testing.T) {
		hard := filepath.Join(dir, "hard.img")
		if err := os.Link(a, hard); err != nil {
			t.Fatal(err)
		}
		id := mustIdentify(t, hard)
		if id.Path != hard || id.Ino != ida.Ino || id.Dev != ida.Dev {
			t.Fatalf("hard link: %+v", id)
		}
		ok, why := Overlap(id, ida)
		if !ok || !strings.Contains(why, hard+" and "+a+" are the same file") || !strings.Contains(why, "hard link") {
			t.Errorf("Overlap(hard link, file) = %v %q", ok, why)
		}
	})
	t.Run("distinct", func(t *testing.T) {
		if ok, why := Overlap(ida, mustIdentify(t, b)); ok {
			t.Errorf("two files overlap: %s", why)
		}
	})
	t.Run("refused", func(t *testing.T) {
		for _, p := range []string{dir, "/dev/null", filepath.Join(dir, "missing")} {
			_, err := Identify(p)
			if err == nil || !strings.HasPrefix(err.Error(), "blockdev: identify "+p+": ") {
				t.Errorf("Identify(%s): %v", p, err)
			}
		}
		if _, err := Identify("/dev/null"); !errors.Is(err, ErrNotSupported) {
			t.Errorf("a character device: %v", err)
		}
		if _, err := Identify(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a missing file: %v", err)
		}
	})
}

func TestIdentifyLoop(t *testing.T) {
	dir := realDir(t)
	c := sparseFile(t, dir, "c.img", 16<<20)
	idc := mustIdentify(t, c)
	loop := loopAttach(t, c)
	var st unix.Stat_t
	if err := unix.Stat(loop, &st); err != nil {
		t.Fatal(err)
	}
	id := mustIdentify(t, loop)
	if id.Kind != KindBlock || id.Rdev != st.Rdev || id.Size != 16<<20 || id.Name != filepath.Base(loop) || id.Parent != nil {
		t.Fatalf("Identify(%s) = %+v", loop, id)
	}
	if id.Loop == nil || id.Loop.Path != c || id.Loop.Ino != idc.Ino || id.Loop.Dev != idc.Dev || id.Offset != 0 {
		t.Fatalf("Identify(%s).Loop = %+v, want %+v", loop, id.Loop, idc)
	}
	if s := id.String(); s != loop+" (block "+devString(st.Rdev)+", 16 MiB, loop over "+c+")" {
		t.Errorf("String() = %q", s)
	}
	if v := id.Via(); v != loop+" → "+c {
		t.Errorf("Via() = %q", v)
	}
	ok, why := Overlap(idc, id)
	if !ok || why != loop+" is a loop device over "+c {
		t.Errorf("Overlap(file, loop over it) = %v %q", ok, why)
	}
	if ok, _ := Overlap(id, id); !ok {
		t.Error("a loop device does not overlap itself")
	}
	other := sparseFile(t, dir, "other.img", 16<<20)
	if ok, why := Overlap(mustIdentify(t, other), id); ok {
		t.Errorf("another file overlaps the loop device: %s", why)
	}

	t.Run("ranges", func(t *testing.T) {
		// Two loops over bytes 1-3 MiB and 3-5 MiB of c.img: apart, but
		// each inside the loop over the whole file.
		l1 := mustIdentify(t, loopAttach(t, c, "--offset", "1048576", "--sizelimit", "2097152"))
		l2 := mustIdentify(t, loopAttach(t, c, "--offset", "3145728", "--sizelimit", "2097152"))
		l3 := mustIdentify(t, loopAttach(t, c, "--offset", "4194304", "--sizelimit", "1048576"))
		if l1.Offset != 1<<20 || l1.Size != 2<<20 || l1.Loop == nil || l1.Loop.Ino != idc.Ino {
			t.Fatalf("loop with offset: %+v", l1)
		}
		if ok, why := Overlap(l1, l2); ok {
			t.Errorf("disjoint loops overlap: %s", why)
		}
		for _, pair := range [][2]Identity{{l1, id}, {l2, l3}, {l1, idc}} {
			if ok, why := Overlap(pair[0], pair[1]); !ok {
				t.Errorf("%s and %s: no overlap", pair[0], pair[1])
			} else if !strings.Contains(why, "loop device over "+c) {
				t.Errorf("reason %q", why)
			}
		}
		_, why := Overlap(l2, l3)
		if !strings.Contains(why, "bytes 3145728-5242880 and 4194304-5242880 of "+c+" overlap") {
			t.Errorf("reason %q", why)
		}
	})

	t.Run("deleted backing file", func(t *testing.T) {
		// The loop driver still holds the file; only a hard link names
		// it now. The sysfs path says "(deleted)".
		d := sparseFile(t, dir, "d.img", 8<<20)
		keep := filepath.Join(dir, "keep.img")
		if err := os.Link(d, keep); err != nil {
			t.Fatal(err)
		}
		l := loopAttach(t, d)
		if err := os.Remove(d); err != nil {
			t.Fatal(err)
		}
		lid := mustIdentify(t, l)
		kid := mustIdentify(t, keep)
		if lid.Loop == nil || lid.Loop.Ino != kid.Ino || lid.Loop.Dev != kid.Dev {
			t.Fatalf("loop over a deleted file: %+v, want the inode of %+v", lid.Loop, kid)
		}
		if ok, why := Overlap(kid, lid); !ok || !strings.Contains(why, "the same file as "+keep) {
			t.Errorf("Overlap(hard link, loop over the deleted name) = %v %q", ok, why)
		}
		// A new file at the old name is not the loop's.
		sparseFile(t, dir, "d.img", 8<<20)
		if ok, why := Overlap(mustIdentify(t, d), mustIdentify(t, l)); ok {
			t.Errorf("a new file at the deleted name overlaps: %s", why)
		}
	})
}

// fakeSys builds a sysfs tree with a disk sdb (8:16, 64 MiB) and its
// partitions sdb1 (8:17, sectors 2048-67583) and sdb2 (8:18, from 67584),
// and device nodes for them: the kernel here may have no partitions to
// show.
func fakeSys(t *testing.T) (sysfs, string) {
	t.Helper()
	root := realDir(t)
	s := sysfs{sys: filepath.Join(root, "sys"), dev: filepath.Join(root, "dev"), byID: filepath.Join(root, "dev", "disk", "by-id")}
	disk := filepath.Join(s.sys, "devices", "pci0", "block", "sdb")
	files := map[string]string{
		"dev": "8:16\n", "size": "131072\n",
		"sdb1/dev": "8:17\n", "sdb1/size": "65536\n", "sdb1/partition": "1\n", "sdb1/start": "2048\n",
		"sdb2/dev": "8:18\n", "sdb2/size": "63488\n", "sdb2/partition": "2\n", "sdb2/start": "67584\n",
	}
	for name, body := range files {
		p := filepath.Join(disk, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, dir := range []string{filepath.Join(s.sys, "dev", "block"), s.byID} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for nums, target := range map[string]string{"8:16": disk, "8:17": disk + "/sdb1", "8:18": disk + "/sdb2"} {
		if err := os.Symlink(target, filepath.Join(s.sys, "dev", "block", nums)); err != nil {
			t.Fatal(err)
		}
	}
	for name, minor := range map[string]uint32{"sdb": 16, "sdb1": 17, "sdb2": 18} {
		if err := unix.Mknod(filepath.Join(s.dev, name), unix.S_IFBLK|0o600, int(unix.Mkdev(8, minor))); err != nil {
			t.Skipf("mknod %s: %v (device nodes need root and a file system without nodev)", name, err)
		}
	}
	return s, root
}

func TestIdentifyPartition(t *testing.T) {
	s, _ := fakeSys(t)
	sdb1, err := s.identify(filepath.Join(s.dev, "sdb1"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if sdb1.Rdev != unix.Mkdev(8, 17) || sdb1.Size != 32<<20 || sdb1.Name != "sdb1" || sdb1.Offset != 2048*512 {
		t.Fatalf("sdb1: %+v", sdb1)
	}
	if p := sdb1.Parent; p == nil || p.Path != filepath.Join(s.dev, "sdb") || p.Rdev != unix.Mkdev(8, 16) || p.Size != 64<<20 || p.Name != "sdb" {
		t.Fatalf("sdb1.Parent: %+v", sdb1.Parent)
	}
	if got := sdb1.String(); got != filepath.Join(s.dev, "sdb1")+" (block 8:17, 32 MiB, partition of "+filepath.Join(s.dev, "sdb")+")" {
		t.Errorf("String() = %q", got)
	}
	sdb2, err := s.identify(filepath.Join(s.dev, "sdb2"), 0)
	if err != nil {
		t.Fatal(err)
	}
	sdb, err := s.identify(filepath.Join(s.dev, "sdb"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if ok, why := Overlap(sdb1, sdb2); ok {
		t.Errorf("two partitions overlap: %s", why)
	}
	ok, why := Overlap(sdb, sdb1)
	if !ok || why != filepath.Join(s.dev, "sdb1")+" is a partition of "+filepath.Join(s.dev, "sdb") {
		t.Errorf("Overlap(disk, partition) = %v %q", ok, why)
	}

	t.Run("stable id", func(t *testing.T) {
		link := func(name, target string) {
			if err := os.Symlink(filepath.Join(s.dev, target), filepath.Join(s.byID, name)); err != nil {
				t.Fatal(err)
			}
		}
		link("ata-DISK_123", "sdb")
		link("ata-DISK_123-part1", "sdb1")
		if id, _ := s.identify(filepath.Join(s.dev, "sdb"), 0); id.StableID != "ata-DISK_123" {
			t.Errorf("StableID %q", id.StableID)
		}
		link("wwn-0x5000c500a1b2c3d4", "sdb")
		link("wwn-0x5000c500a1b2c3d4-part1", "sdb1")
		id, _ := s.identify(filepath.Join(s.dev, "sdb"), 0)
		if id.StableID != "wwn-0x5000c500a1b2c3d4" {
			t.Errorf("StableID %q, want the wwn- name", id.StableID)
		}
		if got := id.String(); got != filepath.Join(s.dev, "sdb")+" (block 8:16, wwn-0x5000c500a1b2c3d4, 64 MiB)" {
			t.Errorf("String() = %q", got)
		}
		if id, _ := s.identify(filepath.Join(s.dev, "sdb1"), 0); id.StableID != "wwn-0x5000c500a1b2c3d4-part1" || id.Parent.StableID != "wwn-0x5000c500a1b2c3d4" {
			t.Errorf("partition StableID %q, disk %q", id.StableID, id.Parent.StableID)
		}
	})
}

// TestOverlap covers the cases no kernel here makes, on identities built
// by hand.
func TestOverlap(t *testing.T) {
	disk := Identity{Path: "/dev/sdb", Kind: KindBlock, Rdev: unix.Mkdev(8, 16), Size: 100 << 30}
	part := func(n uint32, start, size int64) Identity {
		return Identity{Path: "/dev/sdb" + strconv.Itoa(int(n)), Kind: KindBlock, Rdev: unix.Mkdev(8, 16+n), Size: size, Parent: &disk, Offset: start}
	}
	p1, p2 := part(1, 1<<20, 10<<30), part(2, 11<<30, 10<<30)
	bad := part(3, 5<<30, 10<<30) // overlaps p1 and p2: a broken partition table
	file := Identity{Path: "/mnt/c.img", Kind: KindFile, Dev: unix.Mkdev(8, 17), Ino: 12, Size: 1 << 30}
	loopP2 := Identity{Path: "/dev/loop3", Kind: KindBlock, Rdev: unix.Mkdev(7, 3), Size: 1 << 30, Loop: &p2, Offset: 1 << 20}
	emptyA := Identity{Path: "/a", Kind: KindFile, Dev: 5, Ino: 9}
	emptyB := Identity{Path: "/b", Kind: KindFile, Dev: 5, Ino: 9}
	unknown := Identity{Path: "/x (deleted)", Kind: KindFile}
	loopUnknown := Identity{Path: "/dev/loop4", Kind: KindBlock, Rdev: unix.Mkdev(7, 4), Size: 1 << 20, Loop: &unknown}
	for _, tc := range []struct {
		a, b Identity
		want string // "" for no overlap
	}{
		{p1, p2, ""},
		{p1, disk, "/dev/sdb1 is a partition of /dev/sdb"},
		{disk, p2, "/dev/sdb2 is a partition of /dev/sdb"},
		{p1, bad, "/dev/sdb1 is a partition of /dev/sdb; /dev/sdb3 is a partition of /dev/sdb; bytes 1048576-10738466816 and 5368709120-16106127360 of /dev/sdb overlap"},
		{p2, loopP2, "/dev/loop3 is a loop device over /dev/sdb2 (offset 1048576)"},
		{p1, loopP2, ""},
		{disk, loopP2, "/dev/loop3 is a loop device over /dev/sdb2 (offset 1048576), a partition of /dev/sdb"},
		{file, p1, "/mnt/c.img is a file on a file system on /dev/sdb1"},
		{p1, file, "/mnt/c.img is a file on a file system on /dev/sdb1"},
		{file, disk, ""}, // its file system's partition is not known from a file: O_EXCL catches that
		{emptyA, emptyB, "/a and /b are the same file (dev 0:5 ino 9: a hard link, or a bind mount)"},
		{unknown, unknown, ""},     // an unknown inode is no inode
		{loopUnknown, unknown, ""}, // idem
		{loopUnknown, loopUnknown, "both are /dev/loop4"},
		{disk, Identity{Path: "/dev/alias", Kind: KindBlock, Rdev: disk.Rdev}, "/dev/sdb and /dev/alias are the same block device (8:16)"},
	} {
		ok, why := Overlap(tc.a, tc.b)
		if ok != (tc.want != "") || why != tc.want {
			t.Errorf("Overlap(%s, %s) = %v %q, want %q", tc.a.Path, tc.b.Path, ok, why, tc.want)
		}
	}
}

func TestSizeString(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1 KiB", 32 << 20: "32 MiB", 3 << 29: "1.5 GiB", 100 << 30: "100 GiB"} {
		if got := sizeString(n); got != want {
			t.Errorf("sizeString(%d) = %q, want %q", n, got, want)
		}
	}
}
