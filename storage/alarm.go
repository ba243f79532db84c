package storage

import (
	"bytes"
	"database/sql"
	"database/sql/driver"
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

// ErrTimeRange is a time for an alarm or a scheduled event outside the
// years 1970 to 9999.
var ErrTimeRange = errors.New("storage: time outside 1970..9999")

var maxTime = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)

// CheckTime reports a time an alarm or a scheduled event cannot have
// (ErrTimeRange).
func CheckTime(at time.Time) error {
	if at.Before(time.Unix(0, 0)) || at.After(maxTime) {
		return ErrTimeRange
	}
	return nil
}

// AlarmWrites counts the calls that may have changed the room's alarm
// (SetAlarm, DeleteAlarm, DeleteAll) on this handle: while it stands
// still, the alarm is as it was, and nobody need read it to know.
func (r *Room) AlarmWrites() uint64 { return r.alarmWrites.Load() }

// ceilMilli is at in milliseconds since 1970, rounded up, as alarms and
// scheduled events are stored: what comes due at that millisecond comes
// no sooner than asked. Events within one millisecond come in the order
// they were scheduled.
func ceilMilli(at time.Time) int64 {
	ms := at.UnixMilli()
	if at.After(time.UnixMilli(ms)) {
		ms++
	}
	return ms
}

// SetAlarm sets the room's alarm to at (millisecond precision, rounded
// up), replacing any, with its retry count. Like every write it joins the
// open transaction: a rolled-back event leaves the alarm as it was.
func (r *Room) SetAlarm(at time.Time, retry int) error {
	if err := CheckTime(at); err != nil {
		return err
	}
	r.alarmWrites.Add(1)
	return r.write(func() error {
		if _, err := r.exec(`INSERT INTO _den_meta (k, v) VALUES ('alarm', ?)
			ON CONFLICT (k) DO UPDATE SET v = excluded.v`, ceilMilli(at)); err != nil {
			return err
		}
		_, err := r.exec(`INSERT INTO _den_meta (k, v) VALUES ('alarm_retry', ?)
			ON CONFLICT (k) DO UPDATE SET v = excluded.v`, int64(retry))
		return err
	})
}

// DeleteAlarm unsets the room's alarm.
func (r *Room) DeleteAlarm() error {
	r.alarmWrites.Add(1)
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
		ON CONFLICT (id) DO UPDATE SET at = excluded.at`, id, kind, name, ceilMilli(at))
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

// ScheduledEntry is a scheduled event: when it is due, and its payload.
type ScheduledEntry struct {
	At      time.Time
	Payload []byte
}

// Schedule stores an event due at at, in a table of den's own (made on
// first use), apart from the author's keys and tables. No AUTOINCREMENT:
// its counter would sit in sqlite_sequence, which author SQL can write.
func (r *Room) Schedule(at time.Time, payload []byte) error {
	if err := CheckTime(at); err != nil {
		return err
	}
	if int64(len(payload)) > r.store.limits.MaxValueBytes {
		return &LimitError{Limit: "value size", Max: r.store.limits.MaxValueBytes, Got: int64(len(payload))}
	}
	return r.write(func() error {
		if _, err := r.exec(`CREATE TABLE IF NOT EXISTS _den_schedule (
			seq INTEGER PRIMARY KEY, at INTEGER NOT NULL, payload BLOB NOT NULL)`); err != nil {
			return err
		}
		if _, err := r.exec(`CREATE INDEX IF NOT EXISTS _den_schedule_at ON _den_schedule (at, seq)`); err != nil {
			return err
		}
		if payload == nil {
			payload = []byte{}
		}
		_, err := r.exec(`INSERT INTO _den_schedule (at, payload) VALUES (?, ?)`, ceilMilli(at), payload)
		return err
	})
}

// hasSchedule reports whether the schedule table exists.
func (r *Room) hasSchedule() (bool, error) {
	_, err := r.queryOne(`SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = '_den_schedule'`)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// TakeDue removes and returns the scheduled events due at now, soonest
// first, at most limit.
func (r *Room) TakeDue(now time.Time, limit int) ([]ScheduledEntry, error) {
	var out []ScheduledEntry
	err := r.write(func() error {
		if ok, err := r.hasSchedule(); err != nil || !ok {
			return err
		}
		c, err := r.prepare(`SELECT seq, at, payload FROM _den_schedule WHERE at <= ? ORDER BY at, seq LIMIT ?`, false)
		if err != nil {
			return err
		}
		var seqs []int64
		if _, err := c.query([]any{now.UnixMilli(), limit}, func(row []driver.Value) error {
			seq, _ := row[0].(int64)
			ms, _ := row[1].(int64)
			p, _ := row[2].([]byte)
			seqs = append(seqs, seq)
			out = append(out, ScheduledEntry{At: time.UnixMilli(ms), Payload: bytes.Clone(p)})
			return nil
		}); err != nil {
			return err
		}
		for _, seq := range seqs {
			if _, err := r.exec(`DELETE FROM _den_schedule WHERE seq = ?`, seq); err != nil {
				return err
			}
		}
		return nil
	})
	return out, err
}

// NextScheduled is when the soonest scheduled event is due.
func (r *Room) NextScheduled() (time.Time, bool, error) {
	var at time.Time
	var ok bool
	err := r.use(func() error {
		if has, err := r.hasSchedule(); err != nil || !has {
			return err
		}
		v, err := r.queryOne(`SELECT at FROM _den_schedule ORDER BY at, seq LIMIT 1`)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		ms, _ := v.(int64)
		at, ok = time.UnixMilli(ms), err == nil
		return err
	})
	return at, ok, err
}
