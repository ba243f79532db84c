// Package storage keeps rooms' data: one SQLite file per room (the
// author's SQL tables and a KV store, with den's own records beside them)
// and node.db, the node's record of the rooms it has created.
//
// A Room is used by one goroutine at a time, the room's event loop.
// Writes outside a transaction commit call by call; the loop runs its
// events inside Begin ... Commit, and Transaction nests as savepoints, so
// an event that fails rolls back alone. Each room database is in WAL mode
// with exclusive locking (no -shm file) and synchronous=FULL unless the
// store is opened with SyncNormal. Room files are opened without SQLite's
// locks (VFS unix-none, as den-room: see registerRoomVFS) and locked by the
// store itself, so no other process uses an awake room's file. With
// SyncFull a room's WAL is written out to walKeepBytes (padWAL), so that a
// commit overwrites it in place. Open handles form a bounded pool: when
// it is full, the least recently used room outside a transaction gives its
// handle up and reopens it on its next call.
//
// Every write checks the room's fencing epoch inside its transaction: a
// handle whose epoch is older than the room's latest Claim cannot write.
package storage
