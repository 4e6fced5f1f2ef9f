package hub

import (
	"context"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/hubd/internal/registry"
	"github.com/kojibus/kojibus/hubd/internal/state"
)

// tagBuildBypass is Koji's tagBuildBypass(tag, build, force=False,
// notify=False): _tag_build without the tag policy or the package list, for
// imports. A locked tag, or a build already tagged, needs force (a retag
// moves the build to the top of the tag). notify has no mail to send here.
func (s *Server) tagBuildBypass(ctx context.Context, c *registry.Call) (any, error) {
	args, err := readTagBuildArgs(c)
	if err != nil {
		return nil, err
	}
	if _, err := c.Bool("notify"); err != nil {
		return nil, err
	}
	force := args.force
	_, err = s.update(ctx, c, func(tx *state.Txn) (any, error) {
		t, b, err := args.lookup(tx.View)
		if err != nil {
			return nil, err
		}
		if t.Locked && !force {
			return nil, bus.NewFault(bus.CodeTagError, "Tag %s is locked", t.Name)
		}
		if _, _, tagged := tx.Get(taggedKey(t.ID, b.ID)); tagged {
			if !force {
				return nil, bus.NewFault(bus.CodeTagError, "build %s already tagged (%s)", b.NVR, t.Name)
			}
			tx.Delete(taggedKey(t.ID, b.ID))
		}
		var userInfo any
		if u, ok := lookupUser(tx.View, registry.Ref{ID: c.Caller.UserID}); ok {
			userInfo = u.User
		}
		return nil, insertTagged(tx, c, t, b, userInfo, force)
	})
	return nil, err
}
