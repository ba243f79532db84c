package storage

import (
	"database/sql"
	"errors"
)

// Empty reports whether the room stores nothing that must outlive its
// file: no row in any of its tables, den's own included (KV entries, the
// alarm, scheduled events and a claimed epoch, which fences off an older
// owner and would go with the file), nor in sqlite_sequence (an
// AUTOINCREMENT counter promises ids are never reused). Tables without
// rows, views, triggers and indexes are schema a constructor makes again;
// SQLite's statistics and a virtual table's shadow tables are derived
// from the rest. A room that is Empty and deleted is as if it had never
// been made.
func (r *Room) Empty() (bool, error) {
	empty := true
	err := r.use(func() error {
		rows, err := r.conn.QueryContext(bg, `SELECT name FROM pragma_table_list
			WHERE schema = 'main' AND type IN ('table', 'virtual')
			AND (name = 'sqlite_sequence' OR name NOT LIKE 'sqlite\_%' ESCAPE '\')`)
		if err != nil {
			return err
		}
		var tables []string
		for rows.Next() {
			var name string
			if err := rows.Scan(&name); err != nil {
				rows.Close()
				return err
			}
			tables = append(tables, name)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, t := range tables {
			var one int
			err := r.conn.QueryRowContext(bg, `SELECT 1 FROM main.`+quoteIdent(t)+` LIMIT 1`).Scan(&one)
			if errors.Is(err, sql.ErrNoRows) {
				continue
			}
			if err == nil {
				empty = false
			}
			return err
		}
		return nil
	})
	return empty && err == nil, err
}
