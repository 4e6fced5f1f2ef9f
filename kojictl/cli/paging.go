package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/kojibus/kojibus/bus"
)

// pageSize is how many rows a listing asks the hub for at a time (tests
// make it small). A page the hub finds over its reply limit is asked for
// again in halves.
var pageSize = 5000

// callPaged calls a listing method that takes Koji's queryOpts, page by
// page (limit and offset) until a short page, and returns every row as one
// JSON array: a listing of any length fits the hub's replies. Rows are
// assumed in the hub's stable order; one seen on two pages (a row added
// before the offset between calls) is kept once, by its id.
func callPaged(ctx context.Context, c *bus.Client, method string, args []any, kw map[string]any) (json.RawMessage, error) {
	all := []json.RawMessage{}
	seen := map[string]bool{}
	size := pageSize
	for offset := 0; ; {
		pkw := map[string]any{}
		for k, v := range kw {
			pkw[k] = v
		}
		pkw["queryOpts"] = map[string]any{"limit": size, "offset": offset}
		raw, err := c.CallRaw(ctx, method, args, pkw)
		if errors.Is(err, bus.ErrReplyTooLarge) && size > 1 {
			size /= 2
			continue // the same offset, in halves
		}
		if err != nil {
			return nil, err
		}
		var rows []json.RawMessage
		if err := json.Unmarshal(raw, &rows); err != nil {
			return nil, fmt.Errorf("%s: %w", method, err)
		}
		for _, row := range rows {
			var id struct {
				ID json.RawMessage `json:"id"`
			}
			if json.Unmarshal(row, &id) == nil && id.ID != nil {
				if seen[string(id.ID)] {
					continue
				}
				seen[string(id.ID)] = true
			}
			all = append(all, row)
		}
		if len(rows) < size {
			return json.Marshal(all)
		}
		offset += len(rows)
	}
}
