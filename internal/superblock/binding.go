package superblock

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/writeboost/writeboost/internal/blockdev"
)

// Binding names the backing device a cache belongs to (the binding
// record's JSON payload, docs/format.md). A cache replays its dirty blocks
// onto its backing device: starting it over another device writes them
// there, and the right one can then never be rescued.
type Binding struct {
	Kind string `json:"kind"` // "file", "block" or "uri"
	Size int64  `json:"size"` // bytes
	// Path is the absolute path (file; block device: as given).
	Path string `json:"path,omitempty"`
	// Dev and Ino are a file's st_dev and st_ino.
	Dev uint64 `json:"dev,omitempty"`
	Ino uint64 `json:"ino,omitempty"`
	// Rdev is a block device's number, "major:minor".
	Rdev string `json:"rdev,omitempty"`
	// StableID is a block device's /dev/disk/by-id name (WWN or serial).
	StableID string `json:"stable_id,omitempty"`
	// URI names a network backing device.
	URI string `json:"uri,omitempty"`
}

func (b Binding) String() string {
	switch b.Kind {
	case "file":
		return fmt.Sprintf("file %s (dev %d, inode %d, %d bytes)", b.Path, b.Dev, b.Ino, b.Size)
	case "block":
		id := b.StableID
		if id == "" {
			id = "no stable id"
		}
		return fmt.Sprintf("block device %s (%s, %s, %d bytes)", b.Path, b.Rdev, id, b.Size)
	case "uri":
		return fmt.Sprintf("%s (%d bytes)", b.URI, b.Size)
	}
	return fmt.Sprintf("%s %s (%d bytes)", b.Kind, b.Path, b.Size)
}

// Matches reports whether other names the same backing device as b; when
// not, why. Sizes must agree. A file is the same by inode (it may have
// been renamed) or by path (it may have been restored from a copy); a
// block device by its stable id when both have one, else by device number
// and path; a network device by URI.
func (b Binding) Matches(other Binding) (bool, string) {
	if b.Kind != other.Kind {
		return false, fmt.Sprintf("the cache belongs to a %s, this is a %s", b.Kind, other.Kind)
	}
	if b.Size != other.Size {
		return false, fmt.Sprintf("the cache belongs to a device of %d bytes, this one has %d", b.Size, other.Size)
	}
	switch b.Kind {
	case "file":
		if (b.Dev == other.Dev && b.Ino == other.Ino) || b.Path == other.Path {
			return true, ""
		}
		return false, "another file (neither its inode nor its path match)"
	case "block":
		if b.StableID != "" && other.StableID != "" {
			if b.StableID == other.StableID {
				return true, ""
			}
			return false, fmt.Sprintf("another disk (id %s, not %s)", other.StableID, b.StableID)
		}
		if b.Rdev == other.Rdev && b.Path == other.Path {
			return true, ""
		}
		return false, "another block device (its device number or path differ)"
	case "uri":
		if b.URI == other.URI {
			return true, ""
		}
		return false, "another URI"
	}
	return false, fmt.Sprintf("unknown kind %q", b.Kind)
}

// BindingOf is the binding naming the storage id identifies. A loop
// device is bound through the file it shows (its number changes from boot
// to boot); its size is the loop device's.
func BindingOf(id blockdev.Identity) Binding {
	if id.Loop != nil && id.Loop.Kind == blockdev.KindFile && id.Offset == 0 {
		b := BindingOf(*id.Loop)
		b.Size = id.Size
		return b
	}
	if id.Kind == blockdev.KindFile {
		return Binding{Kind: "file", Size: id.Size, Path: id.Path, Dev: id.Dev, Ino: id.Ino}
	}
	return Binding{Kind: "block", Size: id.Size, Path: id.Path, StableID: id.StableID,
		Rdev: fmt.Sprintf("%d:%d", unix.Major(id.Rdev), unix.Minor(id.Rdev))}
}

// BindingOfDevice is the binding naming dev, opened from name: an NBD
// export by its URI without TLS parameters (it never shares storage with
// a local cache), else the file or block device name identifies.
func BindingOfDevice(name string, dev blockdev.Device) (Binding, error) {
	if nd, ok := dev.(*blockdev.NBD); ok {
		return Binding{Kind: "uri", Size: nd.Size(), URI: nd.URI()}, nil
	}
	id, err := blockdev.Identify(name)
	if err != nil {
		return Binding{}, err
	}
	return BindingOf(id), nil
}
