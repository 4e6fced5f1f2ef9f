package hub

// Limits on what a caller may send: checked before anything is stored,
// each refused with a ParameterError that names the limit and the size
// found. The request's size, nesting and strings are checked as it is
// decoded (bus.DecodeRequest), names where they are validated
// (verifyNameInternal), extras and task results where they are stored; the
// store refuses a transaction that would not decode again or not fit in a
// message (state.Store.Update), whatever built it.

import (
	"encoding/json"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/bus/config"
)

// Limits are hub.conf's [hub] MaxRequestSize, MaxStringSize, MaxExtraSize,
// MaxExtraKeys and MaxResultSize, read at start.
type Limits struct {
	bus.RequestLimits
	ExtraSize  int // bytes of a tag's or build's extra, encoded as JSON
	ExtraKeys  int // keys of a tag's or build's extra
	ResultSize int // bytes of a task's result (host.closeTask, host.failTask), encoded as JSON
}

// Defaults: extras of Koji's tags and builds hold tens of keys and a few
// kilobytes; a task's result lists its files and logs.
const (
	defaultMaxExtraSize  = 256 << 10
	defaultMaxExtraKeys  = 1024
	defaultMaxResultSize = 1 << 20
	// maxRequestSize leaves room below the payload limit for the request's
	// headers (the session, the request id).
	maxRequestSize = bus.MaxPayload - 64<<10
)

// defaultLimits are the limits without a hub.conf.
func defaultLimits() Limits {
	return Limits{
		RequestLimits: bus.RequestLimits{Size: bus.DefaultMaxRequestSize, StringSize: bus.DefaultMaxStringSize},
		ExtraSize:     defaultMaxExtraSize, ExtraKeys: defaultMaxExtraKeys, ResultSize: defaultMaxResultSize,
	}
}

// loadLimits reads the limits from hub.conf's [hub] section (nil: the defaults).
func loadLimits(h *config.Section) (Limits, error) {
	l := defaultLimits()
	for _, o := range []struct {
		key string
		dst *int
		hi  int
	}{
		{"MaxRequestSize", &l.Size, maxRequestSize},
		{"MaxStringSize", &l.StringSize, maxRequestSize},
		{"MaxExtraSize", &l.ExtraSize, maxRequestSize},
		{"MaxExtraKeys", &l.ExtraKeys, 1 << 20},
		{"MaxResultSize", &l.ResultSize, maxRequestSize},
	} {
		n, err := h.IntRange(o.key, *o.dst, 1, o.hi)
		if err != nil {
			return Limits{}, err
		}
		*o.dst = n
	}
	return l, nil
}

// checkExtra refuses an extra (what: "tag", "build") beyond the limits.
func (l Limits) checkExtra(what string, extra map[string]any) error {
	if len(extra) > l.ExtraKeys {
		return bus.ParameterError("%s extra of %s keys exceeds the limit of %s (MaxExtraKeys)", what, bus.Count(len(extra)), bus.Count(l.ExtraKeys))
	}
	if len(extra) == 0 {
		return nil
	}
	b, err := json.Marshal(extra)
	if err != nil {
		return bus.ParameterError("%s extra cannot be encoded: %v", what, err)
	}
	if len(b) > l.ExtraSize {
		return bus.ParameterError("%s extra of %s bytes exceeds the limit of %s (MaxExtraSize)", what, bus.Count(len(b)), bus.Count(l.ExtraSize))
	}
	return nil
}

// checkResult refuses an encoded task result beyond the limit.
func (l Limits) checkResult(result []byte) error {
	if len(result) > l.ResultSize {
		return bus.ParameterError("task result of %s bytes exceeds the limit of %s (MaxResultSize)", bus.Count(len(result)), bus.Count(l.ResultSize))
	}
	return nil
}
