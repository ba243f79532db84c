package storage

import (
	"bytes"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"strings"
)

// Entry is one key and its value.
type Entry struct {
	Key   string
	Value []byte
}

// ListOptions select a range of keys: those with Prefix, from Start
// (inclusive) to End (exclusive), at most Limit (0: all), in key order or
// Reverse.
type ListOptions struct {
	Prefix  string
	Start   string
	End     string
	Limit   int
	Reverse bool
}

func (r *Room) checkKeys(keys []string) error {
	lim := r.store.limits
	if len(keys) > lim.MaxBatchKeys {
		return &LimitError{Limit: "keys per call", Max: int64(lim.MaxBatchKeys), Got: int64(len(keys))}
	}
	for _, k := range keys {
		if int64(len(k)) > lim.MaxKeyBytes {
			return &LimitError{Limit: "key size", Max: lim.MaxKeyBytes, Got: int64(len(k))}
		}
	}
	return nil
}

// Get returns key's value and whether it is set.
func (r *Room) Get(key string) ([]byte, bool, error) {
	m, err := r.GetMany([]string{key})
	v, ok := m[key]
	return v, ok, err
}

// GetMany returns the values of the keys that are set.
func (r *Room) GetMany(keys []string) (map[string][]byte, error) {
	if err := r.checkKeys(keys); err != nil {
		return nil, err
	}
	out := make(map[string][]byte, len(keys))
	err := r.use(func() error {
		for _, k := range keys {
			v, err := r.queryOne(`SELECT value FROM _den_kv WHERE key = ?`, k)
			if errors.Is(err, sql.ErrNoRows) {
				continue
			}
			if err != nil {
				return err
			}
			out[k], _ = v.([]byte)
		}
		return nil
	})
	return out, err
}

// Put sets key to value.
func (r *Room) Put(key string, value []byte) error {
	return r.PutMany([]Entry{{key, value}})
}

// PutMany sets every entry, atomically.
func (r *Room) PutMany(entries []Entry) error {
	keys := make([]string, len(entries))
	for i, e := range entries {
		keys[i] = e.Key
		if int64(len(e.Value)) > r.store.limits.MaxValueBytes {
			return &LimitError{Limit: "value size", Max: r.store.limits.MaxValueBytes, Got: int64(len(e.Value))}
		}
	}
	if err := r.checkKeys(keys); err != nil {
		return err
	}
	return r.write(func() error {
		for _, e := range entries {
			v := e.Value
			if v == nil {
				v = []byte{}
			}
			if _, err := r.exec(`INSERT INTO _den_kv (key, value) VALUES (?, ?)
				ON CONFLICT (key) DO UPDATE SET value = excluded.value`, e.Key, v); err != nil {
				return err
			}
		}
		return nil
	})
}

// Delete removes key, reporting whether it was set.
func (r *Room) Delete(key string) (bool, error) {
	n, err := r.DeleteMany([]string{key})
	return n == 1, err
}

// DeleteMany removes the keys, atomically, and counts those that were set.
func (r *Room) DeleteMany(keys []string) (int, error) {
	if err := r.checkKeys(keys); err != nil {
		return 0, err
	}
	var n int
	err := r.write(func() error {
		for _, k := range keys {
			res, err := r.exec(`DELETE FROM _den_kv WHERE key = ?`, k)
			if err != nil {
				return err
			}
			d, _ := res.RowsAffected()
			n += int(d)
		}
		return nil
	})
	return n, err
}

// List returns the entries opts selects.
func (r *Room) List(opts ListOptions) ([]Entry, error) {
	var where []string
	var args []any
	if opts.Prefix != "" {
		// A range, not LIKE: keys are compared as bytes, and a prefix may
		// hold % or _.
		where = append(where, "key >= ?")
		args = append(args, opts.Prefix)
		if end, ok := prefixEnd(opts.Prefix); ok {
			where = append(where, "key < ?")
			args = append(args, end)
		}
	}
	if opts.Start != "" {
		where = append(where, "key >= ?")
		args = append(args, opts.Start)
	}
	if opts.End != "" {
		where = append(where, "key < ?")
		args = append(args, opts.End)
	}
	q := `SELECT key, value FROM _den_kv`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY key"
	if opts.Reverse {
		q += " DESC"
	}
	if opts.Limit > 0 {
		q += " LIMIT ?"
		args = append(args, opts.Limit)
	}
	var out []Entry
	err := r.use(func() error {
		c, err := r.prepare(q, false)
		if err != nil {
			return err
		}
		_, err = c.query(args, func(row []driver.Value) error {
			k, _ := row[0].(string)
			v, _ := row[1].([]byte)
			out = append(out, Entry{k, bytes.Clone(v)})
			return nil
		})
		return err
	})
	return out, err
}

// prefixEnd is the least string greater than every string with prefix p,
// if there is one.
func prefixEnd(p string) (string, bool) {
	b := []byte(p)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1]), true
		}
	}
	return "", false
}

// GetJSON reads key's value as JSON into a T.
func GetJSON[T any](r *Room, key string) (T, bool, error) {
	var v T
	b, ok, err := r.Get(key)
	if err != nil || !ok {
		return v, ok, err
	}
	return v, true, json.Unmarshal(b, &v)
}

// PutJSON stores v as JSON under key.
func PutJSON(r *Room, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return r.Put(key, b)
}
