package main

// plannedRows returns the id of every row a run of c with every phase
// records (measured or missing), built from the same tables and id helpers
// as the phases themselves, so that a target naming a row no run produces
// shows up in a unit test rather than as "not measured" after ten minutes.
func plannedRows(c config) map[string]bool {
	ids := map[string]bool{}
	for _, j := range physJobs() {
		ids[physRowID(j.key)] = true
	}
	ids[physRowID("read-1GiB")] = true
	ids["check/fsync32"] = true
	for _, wl := range workloads() {
		if len(wl.subjectsFor(c)) > 0 {
			for _, key := range wl.beside {
				ids[besideRowID(key, wl.key)] = true
			}
		}
		for _, s := range wl.subjectsFor(c) {
			ids[nbdRowID(wl.key, s)] = true
			if wl.flushLat {
				ids[nbdRowID(flushLatKey(wl.key), s)] = true
			}
		}
	}
	ids["writeback/unsorted-4k"] = true
	for _, p := range patterns() {
		for _, tr := range wbTransports() {
			for _, m := range []string{"drain", "rate", "requests", "flushes"} {
				ids[wbRowID(p.key, m, tr)] = true
			}
		}
	}
	for _, b := range engineBenches() {
		ids["engine/"+b.key] = true
		for _, x := range b.extras {
			ids["engine/"+b.key+"/"+x.key] = true
		}
	}
	return ids
}
