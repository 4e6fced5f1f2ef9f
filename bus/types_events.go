package bus

import "encoding/json"

// EventInfo is getEvent's and getLastEvent's answer, Koji's shape: the event
// id and its time in seconds since the epoch. In kojibus an event id is the
// sequence of the commit that made the change: monotonic, not dense.
type EventInfo struct {
	ID uint64  `json:"id"`
	TS float64 `json:"ts"`
}

// ArchivedEvent is one element of queryEvents' answer: an event of
// KOJI_EVENTS as the hub's archive keeps it.
type ArchivedEvent struct {
	ID      uint64          `json:"id"`  // Koji event id (shared by the events of one commit)
	Seq     uint64          `json:"seq"` // KOJI_EVENTS stream sequence
	Address string          `json:"address"`
	Props   map[string]any  `json:"props"`
	Body    json.RawMessage `json:"body"`
	TS      float64         `json:"ts"`
}

// EventPage is queryEvents' answer: a page of events and the cursor of the
// next page (null when there is none).
type EventPage struct {
	Events []ArchivedEvent `json:"events"`
	Cursor *string         `json:"cursor"`
}
