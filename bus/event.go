package bus

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"

	"github.com/nats-io/nats.go"
)

// Event is one state change as subscribers see it on koji.event.<address>:
// the protonmsg address, its properties and its JSON body.
type Event struct {
	ID      uint64          `json:"id"` // Koji event id: monotonic across the hub cluster
	Address string          `json:"address"`
	Props   map[string]any  `json:"props"`
	Body    json.RawMessage `json:"body"`
	Seq     uint64          `json:"seq,omitempty"` // KOJI_EVENTS stream sequence
}

// EventToMsg encodes an event as a NATS message. Properties go into headers
// twice: typed, as one JSON object (Koji-Props), and one header per property
// (Koji-Prop-<name>) so that subscribers can filter without parsing.
func EventToMsg(ev *Event) (*nats.Msg, error) {
	m := nats.NewMsg(EventSubject(ev.Address))
	m.Data = ev.Body
	props, err := json.Marshal(ev.Props)
	if err != nil {
		return nil, fmt.Errorf("encode event props: %w", err)
	}
	m.Header.Set(HeaderAddress, ev.Address)
	m.Header.Set(HeaderEventID, strconv.FormatUint(ev.ID, 10))
	m.Header.Set(HeaderPropsJSON, string(props))
	keys := make([]string, 0, len(ev.Props))
	for k := range ev.Props {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		m.Header.Set(HeaderPropPrefix+k, PropString(ev.Props[k]))
	}
	return m, nil
}

// PropString renders a property value as protonmsg's Python would put it in text.
func PropString(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case json.Number:
		return x.String()
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case bool:
		if x {
			return "True"
		}
		return "False"
	default:
		b, _ := json.Marshal(x)
		return string(b)
	}
}

// EventFromMsg decodes an event received on koji.event.>.
func EventFromMsg(m *nats.Msg) (*Event, error) {
	ev := &Event{Address: EventAddress(m.Subject), Body: json.RawMessage(m.Data)}
	if m.Header != nil {
		if a := m.Header.Get(HeaderAddress); a != "" {
			ev.Address = a
		}
		if id := m.Header.Get(HeaderEventID); id != "" {
			n, err := strconv.ParseUint(id, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("event %s: bad %s %q", m.Subject, HeaderEventID, id)
			}
			ev.ID = n
		}
		if p := m.Header.Get(HeaderPropsJSON); p != "" {
			if err := json.Unmarshal([]byte(p), &ev.Props); err != nil {
				return nil, fmt.Errorf("event %s: bad %s: %w", m.Subject, HeaderPropsJSON, err)
			}
		}
	}
	if md, err := m.Metadata(); err == nil {
		ev.Seq = md.Sequence.Stream
	}
	return ev, nil
}
