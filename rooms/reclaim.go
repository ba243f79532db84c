package rooms

import "go.uber.org/zap"

// reclaim deletes the storage of a room the sweep evicts with nothing
// stored (storage.Room.Empty), unless Config.KeepEmptyRooms: its file and
// node.db record go, and the room is absent again, as if it had never
// been made. Otherwise every name a client visited would keep a file for
// ever. It runs as the room leaves memory, on the room's goroutine, the
// one that could write to the room or open its file again: events that
// come meanwhile wait in the mailbox, and the wake they bring makes the
// room anew once storage's deletion is done (Store.Room waits for it, and
// the admin API says deleting meanwhile). It reports whether it took the
// room's handle, which the deletion closes, failed or not.
func (r *room) reclaim(awake bool) bool {
	rt := r.rt
	if rt.keepEmpty || !awake {
		// A failed wake built no object: what it left is no sign of what
		// the room holds.
		return false
	}
	r.mu.Lock()
	evicted := !r.dead && !r.stopped && len(r.socks) == 0 && len(r.queue) == 0 && len(r.held) == 0
	r.mu.Unlock()
	if !evicted {
		return false
	}
	// An alarm the scheduler holds or fires would make the room anew:
	// its room's file has it, or had it and the alarm finds it gone at a
	// wake, and the room goes at its next eviction.
	if _, ok, firing := rt.alarms.lookup(r.id); ok || firing {
		return false
	}
	empty, err := r.store.Empty()
	if err != nil {
		r.log.Warn("could not tell whether the room stores anything; its file is kept", zap.Error(err))
	}
	if !empty {
		return false
	}
	// Storage's own deletion, admin DELETE's: recorded in node.db before
	// a file goes, so den killed at any moment of it finishes it at its
	// next start (Store.UnfinishedDeletions).
	if err := rt.store.Delete(r.id.String()); err != nil {
		r.log.Warn("an empty room's storage was not deleted; it is tried again before the room next opens", zap.Error(err))
		return true
	}
	rt.reclaims.Add(1)
	return true
}
