package control

import (
	"context"
	"time"
)

// VolumeNames lists the volumes running now (stale state files skipped),
// for shell completion: quickly, or nothing.
func VolumeNames() []string {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	vols, err := ListVolumes(ctx, RunDir())
	if err != nil {
		return nil
	}
	names := make([]string, 0, len(vols))
	for _, v := range vols {
		names = append(names, v.Name)
	}
	return names
}
