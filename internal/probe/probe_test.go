package probe

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/writeboost/writeboost/internal/layout"
)

// image makes a sparse file of size bytes in a fresh directory.
func image(t *testing.T, name string, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	return p
}

// tool runs a command that writes a signature; the test is skipped when
// the command is not installed (scripts/deps.sh installs them all).
func tool(t *testing.T, stdin string, name string, args ...string) {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		for _, dir := range []string{"/usr/sbin", "/sbin"} {
			if p := filepath.Join(dir, name); executable(p) {
				path, err = p, nil
			}
		}
	}
	if err != nil {
		t.Skipf("%s is not installed (scripts/deps.sh installs it)", name)
	}
	cmd := exec.Command(path, args...)
	cmd.Stdin = strings.NewReader(stdin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %q: %v\n%s", name, args, err, out)
	}
}

func types(sigs []Signature) []string {
	var ts []string
	for _, s := range sigs {
		ts = append(ts, s.String())
	}
	return ts
}

// TestRealImages probes images made by the tools that make them. The
// offsets are where each format puts its magic (ext2/3/4: superblock at
// 1024 + s_magic at 0x38; swap: the last 10 bytes of the first page; xfs:
// byte 0; btrfs: superblock at 64 KiB + magic at 0x40; MBR: 0x55aa at
// 510; GPT: header in LBA 1 and in the last LBA; LUKS2: both headers;
// bcache: superblock at 4096 + magic at 0x18).
func TestRealImages(t *testing.T) {
	if _, err := lookTool(); err != nil {
		t.Fatalf("%v: the probe cannot run here (scripts/deps.sh installs %s)", err, Package)
	}
	key := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(key, []byte("not a secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		size int64
		make func(t *testing.T, p string)
		want []string
	}{
		{"zero", 8 << 20, func(*testing.T, string) {}, nil},
		{"ext2", 16 << 20, func(t *testing.T, p string) { tool(t, "", "mkfs.ext4", "-q", "-F", "-t", "ext2", p) }, []string{"ext2 at offset 0x438"}},
		{"ext3", 16 << 20, func(t *testing.T, p string) { tool(t, "", "mkfs.ext4", "-q", "-F", "-t", "ext3", p) }, []string{"ext3 at offset 0x438"}},
		{"ext4", 16 << 20, func(t *testing.T, p string) { tool(t, "", "mkfs.ext4", "-q", "-F", p) }, []string{"ext4 at offset 0x438"}},
		{"swap", 8 << 20, func(t *testing.T, p string) { tool(t, "", "mkswap", "--pagesize", "4096", p) }, []string{"swap at offset 0xff6"}},
		{"xfs", 300 << 20, func(t *testing.T, p string) { tool(t, "", "mkfs.xfs", "-q", "-f", p) }, []string{"xfs at offset 0x0"}},
		{"btrfs", 128 << 20, func(t *testing.T, p string) { tool(t, "", "mkfs.btrfs", "-q", "-f", p) }, []string{"btrfs at offset 0x10040"}},
		{"mbr", 16 << 20, func(t *testing.T, p string) {
			tool(t, "label: dos\nstart=2048, size=4096, type=83\n", "sfdisk", "-q", p)
		}, []string{"dos at offset 0x1fe"}},
		{"gpt", 16 << 20, func(t *testing.T, p string) {
			tool(t, "label: gpt\nstart=2048, size=4096\n", "sfdisk", "-q", p)
		}, []string{"PMBR at offset 0x1fe", "gpt at offset 0x200", "gpt at offset 0xfffe00"}},
		{"luks2", 32 << 20, func(t *testing.T, p string) {
			tool(t, "", "cryptsetup", "luksFormat", "-q", "--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", key, p)
		}, []string{"crypto_LUKS at offset 0x0", "crypto_LUKS at offset 0x4000"}},
		{"bcache", 64 << 20, func(t *testing.T, p string) { tool(t, "", "make-bcache", "-B", p) }, []string{"bcache at offset 0x1018"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := image(t, tc.name+".img", tc.size)
			tc.make(t, p)
			sigs, err := Device(context.Background(), p)
			if err != nil {
				t.Fatal(err)
			}
			if got := types(sigs); !slices.Equal(got, tc.want) {
				t.Fatalf("signatures %q, want %q", got, tc.want)
			}
			if tc.name == "ext4" && (len(sigs[0].UUID) != 36 || sigs[0].Label != "") {
				t.Errorf("ext4 UUID %q label %q", sigs[0].UUID, sigs[0].Label)
			}
		})
	}
}

// TestOwnFormat: libblkid does not know the cache format, so a device
// with nothing but the magic probes empty, and formatting (the first MiB
// zeroed) removes a file system's primary signature.
func TestOwnFormat(t *testing.T) {
	p := image(t, "cache.img", 16<<20)
	tool(t, "", "mkfs.ext4", "-q", "-F", p)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	first := make([]byte, layout.SuperblockSize)
	layout.EncodeMagic(first)
	if _, err := f.WriteAt(first, 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	sigs, err := Device(context.Background(), p)
	if err != nil || len(sigs) != 0 {
		t.Fatalf("a formatted cache probes as %q, %v", types(sigs), err)
	}
}

func TestDashPath(t *testing.T) {
	p := image(t, "-x.img", 16<<20)
	tool(t, "", "mkswap", "--pagesize", "4096", p)
	t.Chdir(filepath.Dir(p))
	sigs, err := Device(context.Background(), "-x.img")
	if err != nil || len(sigs) != 1 || sigs[0].Type != "swap" {
		t.Fatalf("%q %v", types(sigs), err)
	}
}

func TestFailures(t *testing.T) {
	dir := t.TempDir()
	if _, err := Device(context.Background(), filepath.Join(dir, "missing")); err == nil || errors.Is(err, ErrNoTool) || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("missing device: %v", err)
	}
	if _, err := Device(context.Background(), dir); err == nil {
		t.Fatal("a directory probed")
	}
	p := image(t, "x.img", 8<<20)
	for _, name := range []string{"wipefs-not-installed", filepath.Join(dir, "no", "wipefs")} {
		old := Tool
		Tool = name
		_, err := Device(context.Background(), p)
		Tool = old
		if !errors.Is(err, ErrNoTool) || !strings.Contains(err.Error(), Package) {
			t.Fatalf("tool %s: %v", name, err)
		}
	}
	// A tool that fails: its message is passed on, on one line.
	fake := filepath.Join(dir, "fake")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\necho 'first\n  second' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	Tool = fake
	_, err := Device(context.Background(), p)
	Tool = "wipefs"
	if err == nil || !strings.HasSuffix(err.Error(), ": first second") {
		t.Fatalf("failing tool: %v", err)
	}
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		err  string
	}{
		{"", nil, ""},
		{`{"signatures": []}`, nil, ""},
		{`{"signatures":[{"device":"d","offset":"0x200","type":"gpt","uuid":null,"label":null},{"device":"d","offset":"0x1fe","type":"PMBR","uuid":null,"label":null}]}`,
			[]string{"PMBR at offset 0x1fe", "gpt at offset 0x200"}, ""},
		{`{"signatures":[{"offset":"0x438","type":"ext4","uuid":"u","label":"root"}]}`, []string{"ext4 at offset 0x438"}, ""},
		{`{"signatures":[{"offset":"zz","type":"ext4"}]}`, nil, `bad offset "zz"`},
		{`{"signatures":[{"offset":"-0x1","type":"ext4"}]}`, nil, "bad offset"},
		{`{"signatures":[{"offset":"0x0","type":""}]}`, nil, "has no type"},
		{`wipefs: something else`, nil, "unreadable output"},
	} {
		sigs, err := parse([]byte(tc.in))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || sigs == nil || !slices.Equal(types(sigs), tc.want) {
			t.Errorf("%s: %q %v, want %q", tc.in, types(sigs), err, tc.want)
		}
	}
	sigs, _ := parse([]byte(`{"signatures":[{"offset":"0x438","type":"ext4","uuid":"u","label":"root"}]}`))
	if sigs[0].UUID != "u" || sigs[0].Label != "root" {
		t.Errorf("uuid/label: %+v", sigs[0])
	}
}

func TestDescribe(t *testing.T) {
	for _, tc := range []struct {
		sigs []Signature
		want string
	}{
		{nil, "no signature"},
		{[]Signature{{Type: "ext4", Offset: 0x438}}, "an ext4 signature at offset 0x438"},
		{[]Signature{{Type: "swap", Offset: 0xff6}}, "a swap signature at offset 0xff6"},
		{[]Signature{{Type: "PMBR", Offset: 0x1fe}, {Type: "gpt", Offset: 0x200}}, "signatures PMBR at offset 0x1fe, gpt at offset 0x200"},
	} {
		if got := Describe(tc.sigs); got != tc.want {
			t.Errorf("Describe(%v) = %q, want %q", tc.sigs, got, tc.want)
		}
	}
}
