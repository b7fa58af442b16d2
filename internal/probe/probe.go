// Package probe looks for the on-disk signatures of other software on a
// device — file systems, partition tables, swap, LVM2 and md RAID members,
// LUKS, bcache and everything else libblkid knows — the way mkfs tools do
// before they write. It asks util-linux rather than carrying its own list
// of magics: `wipefs --no-act --json DEVICE` runs libblkid's low-level
// probe, reports every signature it finds (not only the first, and also
// one whose checksum fails) with its byte offset, and opens the device
// read-only without claiming it, so it works on a device we already hold
// exclusively.
//
// libblkid does not know the writeboost cache format: a cache device
// probes as empty, or as whatever older signature its data area still
// holds. Callers decide by the magic in sector 0 first and probe only a
// device without it.
package probe

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Package is the Debian package that provides Tool, for messages.
const Package = "util-linux"

// Tool is the command Device runs: a name, looked up in PATH and then in
// /usr/sbin and /sbin (which a non-root PATH often lacks), or a path.
// Tests point it at a missing command.
var Tool = "wipefs"

// Timeout bounds one probe: a device that does not answer reads must not
// hang the command that asked.
const Timeout = 2 * time.Minute

// ErrNoTool is returned when Tool cannot be found: nothing was probed.
var ErrNoTool = errors.New("probe: wipefs not found (it is in the Debian package " + Package + ")")

// Signature is one signature found on a device.
type Signature struct {
	// Type is libblkid's name for it: "ext4", "xfs", "btrfs", "swap",
	// "LVM2_member", "crypto_LUKS", "linux_raid_member", "bcache",
	// "dos" (an MBR partition table), "gpt", "PMBR" (GPT's protective MBR)...
	Type string
	// Offset is the byte offset of its magic on the device.
	Offset int64
	// UUID and Label, where the signature carries them ("" otherwise).
	UUID, Label string
}

// String is "ext4 at offset 0x438".
func (s Signature) String() string {
	return fmt.Sprintf("%s at offset %#x", s.Type, s.Offset)
}

// Describe names sigs in a few words for a message: "an ext4 signature at
// offset 0x438", or "signatures gpt at offset 0x200, PMBR at offset 0x1fe".
func Describe(sigs []Signature) string {
	switch len(sigs) {
	case 0:
		return "no signature"
	case 1:
		s := sigs[0]
		art := "a"
		if s.Type != "" && strings.ContainsRune("aeiouAEIOU", rune(s.Type[0])) {
			art = "an"
		}
		return fmt.Sprintf("%s %s signature at offset %#x", art, s.Type, s.Offset)
	}
	parts := make([]string, len(sigs))
	for i, s := range sigs {
		parts[i] = s.String()
	}
	return "signatures " + strings.Join(parts, ", ")
}

// output is what `wipefs --json` prints.
type output struct {
	Signatures []struct {
		Device string  `json:"device"`
		Offset string  `json:"offset"` // "0x438"
		Type   string  `json:"type"`
		UUID   *string `json:"uuid"`
		Label  *string `json:"label"`
	} `json:"signatures"`
}

// Device probes the device or file at path and returns the signatures on
// it, sorted by offset; none is an empty slice and a nil error. It fails
// (wrapping ErrNoTool when the tool is missing) when it could not look, and
// then says nothing about the device.
func Device(ctx context.Context, path string) ([]Signature, error) {
	tool, err := lookTool()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	// "--" ends the options: a path may start with a dash.
	cmd := exec.CommandContext(ctx, tool, "--no-act", "--json", "--", path)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.Join(strings.Fields(stderr.String()), " ")
		if msg == "" {
			msg = err.Error()
		}
		if ctx.Err() != nil {
			msg = fmt.Sprintf("no answer after %s", Timeout)
		}
		return nil, fmt.Errorf("probe: %s %s: %s", filepath.Base(tool), path, msg)
	}
	sigs, err := parse(stdout.Bytes())
	if err != nil {
		return nil, fmt.Errorf("probe: %s %s: %w", filepath.Base(tool), path, err)
	}
	return sigs, nil
}

// parse decodes wipefs's JSON. Empty output means no signature (older
// util-linux prints nothing at all then).
func parse(b []byte) ([]Signature, error) {
	sigs := []Signature{}
	if len(bytes.TrimSpace(b)) == 0 {
		return sigs, nil
	}
	var out output
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("unreadable output: %w", err)
	}
	for _, s := range out.Signatures {
		off, err := strconv.ParseInt(s.Offset, 0, 64)
		if err != nil || off < 0 {
			return nil, fmt.Errorf("signature %q: bad offset %q", s.Type, s.Offset)
		}
		if s.Type == "" {
			return nil, fmt.Errorf("signature at offset %s has no type", s.Offset)
		}
		sig := Signature{Type: s.Type, Offset: off}
		if s.UUID != nil {
			sig.UUID = *s.UUID
		}
		if s.Label != nil {
			sig.Label = *s.Label
		}
		sigs = append(sigs, sig)
	}
	slices.SortStableFunc(sigs, func(a, b Signature) int { return cmp.Compare(a.Offset, b.Offset) })
	return sigs, nil
}

// lookTool finds Tool.
func lookTool() (string, error) {
	if strings.Contains(Tool, "/") {
		if executable(Tool) {
			return Tool, nil
		}
		return "", fmt.Errorf("%w: no %s", ErrNoTool, Tool)
	}
	if p, err := exec.LookPath(Tool); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		if p := filepath.Join(dir, Tool); executable(p) {
			return p, nil
		}
	}
	return "", ErrNoTool
}

func executable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}
