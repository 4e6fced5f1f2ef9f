package cli

import (
	"encoding/json"
	"sort"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/kojibus/kojibus/bus"
)

// bridgeStatus is what a protonmsg bridge answers (bridge.Status).
type bridgeStatus struct {
	Name         string  `json:"name"`
	Broker       string  `json:"broker"`
	QueueEnabled bool    `json:"queue_enabled"`
	QueueDepth   int     `json:"queue_depth"`
	OldestQueued float64 `json:"oldest_queued_age"`
	Sent         int64   `json:"sent"`
	Failed       int64   `json:"failed"`
	Expired      int64   `json:"expired"`
	Skipped      int64   `json:"skipped"`
	LastError    string  `json:"last_error"`
	LastSeq      uint64  `json:"last_seq"`
}

func (a *app) bridgeCommands() []*cobra.Command { return []*cobra.Command{a.bridgeStatusCmd()} }

func (a *app) bridgeStatusCmd() *cobra.Command {
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "bridge-status",
		Short: "Show the protonmsg bridges: broker, queue, sent/failed/expired counts",
		Long: `Every running protonmsg bridge (kojibridge, or hubd with --protonmsg-conf) answers;
the answers that arrive within --wait are shown.`,
		Args: exactArgs(0, "This command takes no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.anon(cmd.Context())
			if err != nil {
				return err
			}
			nc := c.Conn()
			inbox := nc.NewRespInbox()
			replies := make(chan *nats.Msg, 64)
			sub, err := nc.ChanSubscribe(inbox, replies)
			if err != nil {
				return err
			}
			defer func() { _ = sub.Unsubscribe() }()
			if err := nc.PublishRequest(bus.BridgeStatusSubject, inbox, nil); err != nil {
				return err
			}
			var all []bridgeStatus
			timer := time.NewTimer(wait)
			defer timer.Stop()
		gather:
			for {
				select {
				case m := <-replies:
					if len(m.Data) == 0 && m.Header.Get("Status") == "503" {
						break gather // NATS' "no responders": no bridge is listening
					}
					var s bridgeStatus
					if err := json.Unmarshal(m.Data, &s); err != nil {
						a.warn("bad answer from a bridge: %v", err)
						continue
					}
					all = append(all, s)
				case <-timer.C:
					break gather
				case <-cmd.Context().Done():
					return cmd.Context().Err()
				}
			}
			if len(all) == 0 {
				return failf("no protonmsg bridge answered")
			}
			sort.Slice(all, func(i, j int) bool { return all[i].Name < all[j].Name })
			if a.jsonOut {
				return a.printJSON(all)
			}
			for i, s := range all {
				if i > 0 {
					a.println()
				}
				broker := s.Broker
				if broker == "" {
					broker = "(not connected)"
				}
				queue := "disabled"
				if s.QueueEnabled {
					queue = "enabled"
				}
				a.printf("Bridge: %s\n", s.Name)
				a.printf("Broker: %s\n", broker)
				a.printf("Queue: %s, %d messages", queue, s.QueueDepth)
				if s.QueueDepth > 0 {
					a.printf(", oldest %s old", (time.Duration(s.OldestQueued * float64(time.Second))).Round(time.Second))
				}
				a.println()
				a.printf("Sent: %d\nFailed: %d\nExpired: %d\nNot sent (no protonmsg message): %d\nLast event: %d\n", s.Sent, s.Failed, s.Expired, s.Skipped, s.LastSeq)
				if s.LastError != "" {
					a.printf("Last error: %s\n", s.LastError)
				}
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&wait, "wait", time.Second, "how long to gather answers")
	return cmd
}
