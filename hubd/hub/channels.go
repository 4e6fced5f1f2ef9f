package hub

import (
	"strconv"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/hubd/internal/state"
)

//	channel.<id>         bus.Channel
//	channelname.<name>   channel id

// schemaChannels are the channels Koji's schema creates (no runroot: the
// runroot plugin's channel is made by the admin).
var schemaChannels = []string{"default", "createrepo", "maven", "livecd", "appliance", "vm", "image", "livemedia"}

func channelKey(id int64) string        { return "channel." + strconv.FormatInt(id, 10) }
func channelNameKey(name string) string { return "channelname." + state.EscapeKey(name) }

func putChannel(tx *state.Txn, name string, desc *string) (*bus.Channel, error) {
	ch := &bus.Channel{ID: tx.NextID("channel"), Name: name, Description: desc, Enabled: true}
	if err := tx.Put(channelKey(ch.ID), ch); err != nil {
		return nil, err
	}
	return ch, tx.Put(channelNameKey(name), ch.ID)
}

func seedChannels(tx *state.Txn) error {
	for _, name := range schemaChannels {
		if _, _, ok := tx.Get(channelNameKey(name)); ok {
			continue
		}
		if _, err := putChannel(tx, name, nil); err != nil {
			return err
		}
	}
	return nil
}
