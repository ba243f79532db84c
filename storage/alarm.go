package storage

import (
	"database/sql"
	"errors"
	"time"
)

// Alarm is the room's one alarm: when it is due, and how many times its
// handler has failed for this alarm (0 for a fresh one). ok is false when
// none is set.
func (r *Room) Alarm() (at time.Time, retry int, ok bool, err error) {
	err = r.use(func() error {
		v, err := r.queryOne(`SELECT v FROM _den_meta WHERE k = 'alarm'`)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		ms, _ := v.(int64)
		at, ok = time.UnixMilli(ms), true
		v, err = r.queryOne(`SELECT v FROM _den_meta WHERE k = 'alarm_retry'`)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		n, _ := v.(int64)
		retry = int(n)
		return err
	})
	return at, retry, ok, err
}

// SetAlarm sets the room's alarm to at (millisecond precision), replacing
// any, with its retry count. Like every write it joins the open
// transaction: a rolled-back event leaves the alarm as it was.
func (r *Room) SetAlarm(at time.Time, retry int) error {
	return r.write(func() error {
		if _, err := r.exec(`INSERT INTO _den_meta (k, v) VALUES ('alarm', ?)
			ON CONFLICT (k) DO UPDATE SET v = excluded.v`, at.UnixMilli()); err != nil {
			return err
		}
		_, err := r.exec(`INSERT INTO _den_meta (k, v) VALUES ('alarm_retry', ?)
			ON CONFLICT (k) DO UPDATE SET v = excluded.v`, int64(retry))
		return err
	})
}

// DeleteAlarm unsets the room's alarm.
func (r *Room) DeleteAlarm() error {
	return r.write(func() error {
		_, err := r.exec(`DELETE FROM _den_meta WHERE k IN ('alarm', 'alarm_retry')`)
		return err
	})
}

// AlarmEntry is a room's alarm in node.db's index of due alarms.
type AlarmEntry struct {
	ID, Kind, Name string
	At             time.Time
}

// IndexAlarm records in node.db that room id (of kind and name) has an
// alarm due at at, so it fires while the room is out of memory and after
// a restart. The index may hold an alarm its room has since dropped (the
// room is asked, and finds none); it must never miss one, so an alarm is
// indexed before the room's transaction that sets it commits.
func (s *Store) IndexAlarm(id, kind, name string, at time.Time) error {
	_, err := s.node.Exec(`INSERT INTO alarms (id, kind, name, at) VALUES (?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET at = excluded.at`, id, kind, name, at.UnixMilli())
	return err
}

// UnindexAlarm drops room id's alarm from node.db's index.
func (s *Store) UnindexAlarm(id string) error {
	_, err := s.node.Exec(`DELETE FROM alarms WHERE id = ?`, id)
	return err
}

// Alarms lists node.db's index of alarms, soonest first.
func (s *Store) Alarms() ([]AlarmEntry, error) {
	rows, err := s.node.Query(`SELECT id, kind, name, at FROM alarms ORDER BY at`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []AlarmEntry
	for rows.Next() {
		var e AlarmEntry
		var ms int64
		if err := rows.Scan(&e.ID, &e.Kind, &e.Name, &ms); err != nil {
			return nil, err
		}
		e.At = time.UnixMilli(ms)
		out = append(out, e)
	}
	return out, rows.Err()
}
