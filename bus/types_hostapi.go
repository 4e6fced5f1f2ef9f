package bus

import "encoding/json"

// Shapes of the builder side of the task API (host.getTaskQueues,
// host.openTask, the task queue messages, failTask's response).

// TaskQueue is one element of host.getTaskQueues: a JetStream pull consumer
// of TasksStream this host may take tasks from, and the core NATS subject
// (under NotifyPrefix) that wakes idle builders when a task is queued there.
type TaskQueue struct {
	Consumer  string `json:"consumer"`
	Subject   string `json:"subject"`
	Notify    string `json:"notify"`
	Priority  int    `json:"priority"`
	ChannelID int64  `json:"channel_id,omitempty"`
	Channel   string `json:"channel,omitempty"`
	Arch      string `json:"arch,omitempty"`
	HostID    int64  `json:"host_id,omitempty"`
}

// TaskDispatch is the JSON body of a task queue message (and of its
// wake-up on the notify subject); the headers HeaderTaskID,
// HeaderTaskAttempt, HeaderTaskMethod and HeaderTaskWeight repeat its fields.
type TaskDispatch struct {
	TaskID    int64   `json:"task_id"`
	Attempt   int64   `json:"attempt"`
	Method    string  `json:"method"`
	Arch      string  `json:"arch"`
	ChannelID int64   `json:"channel_id"`
	Priority  int     `json:"priority"`
	Weight    float64 `json:"weight"`
	Consumer  string  `json:"consumer,omitempty"`
}

// OpenedTask is host.openTask's answer: the task as getTaskInfo shows it and
// its request (the handler's arguments; Koji's trailing {"__starstar": true,
// ...} element carries keyword arguments).
type OpenedTask struct {
	Task    Task              `json:"task"`
	Request []json.RawMessage `json:"request"`
}

// TaskFault is the response of host.failTask and a canfail child's result in
// host.taskWaitResults, as Koji's builders send faults.
type TaskFault struct {
	FaultCode   int    `json:"faultCode"`
	FaultString string `json:"faultString"`
}
