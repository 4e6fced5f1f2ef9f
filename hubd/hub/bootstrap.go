package hub

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/bus/config"
	"github.com/kojibus/kojibus/hubd/internal/state"
)

// bootstrap seeds what Koji's schema seeds (permissions, channels) and, on
// the first start, creates the admin user kojiadmin with a random password
// and writes a ready kojictl profile for it.
func (s *Server) bootstrap(ctx context.Context) error {
	password := bus.RandomSecret(18)
	hash, err := hashPassword(password)
	if err != nil {
		return err
	}
	res, err := s.store.Update(ctx, "", func(tx *state.Txn) (any, error) {
		for _, p := range seededPerms {
			if _, _, ok := tx.Get(permNameKey(p)); !ok {
				if err := putPerm(tx, p, nil); err != nil {
					return nil, err
				}
			}
		}
		if err := seedChannels(tx); err != nil {
			return nil, err
		}
		if _, _, ok := tx.Get(challengeSecretKey); !ok {
			if err := tx.Put(challengeSecretKey, bus.RandomSecret(32)); err != nil {
				return nil, err
			}
		}
		// Earlier versions stored an index of the tasks on each host
		// (hosttask.<host>.<task>); views now keep it (taskGroups).
		for _, k := range tx.Keys("hosttask", "") {
			tx.Delete(k)
		}
		if _, _, ok := tx.Get(userNameKey(bootstrapAdmin)); ok {
			return false, nil
		}
		if _, err := createUserTx(tx, bootstrapAdmin, bus.UserTypeNormal, hash, []string{"admin"}); err != nil {
			return nil, err
		}
		return true, nil
	})
	if err != nil {
		return err
	}
	path := s.ProfilePath()
	if created, _ := res.Value.(bool); created {
		if err := s.writeProfile(path, bootstrapAdmin, password); err != nil {
			return err
		}
		s.log.Info("created bootstrap admin; kojictl profile written", "user", bootstrapAdmin, "profile", path)
	} else if _, err := os.Stat(path); err == nil {
		if err := s.followProfileServer(path); err != nil {
			return err
		}
		s.log.Info("kojictl profile", "profile", path)
	} else if errors.Is(err, os.ErrNotExist) {
		s.log.Warn("bootstrap admin exists but its profile is gone; reset its password with setPassword", "profile", path)
	}
	return nil
}

// writeProfile writes a kojictl profile (INI, like koji's) for a user.
func (s *Server) writeProfile(path, user, password string) error {
	// The user's own password is also its NATS identity (docs/security.md).
	pairs := [][2]string{{"server", s.profileURL}}
	if s.cfg.TLSCAFile != "" {
		pairs = append(pairs, [2]string{"serverca", s.cfg.TLSCAFile})
	}
	pairs = append(pairs, [2]string{"authtype", "password"}, [2]string{"user", user}, [2]string{"password", password})
	data := config.Write(config.KV{Section: "koji", Pairs: pairs})
	if err := bus.WriteFileAtomic(path, data, 0o600); err != nil {
		return fmt.Errorf("write profile: %w", err)
	}
	return nil
}

// followProfileServer points the saved profile's server at the address the
// hub listens on now (hubd --listen may differ from the last start), keeping
// every other line, credentials included.
func (s *Server) followProfileServer(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("profile: %w", err)
	}
	out, changed, err := config.SetValue(data, "koji", "server", s.profileURL)
	if err != nil {
		return fmt.Errorf("profile %s: %w", path, err)
	}
	if !changed {
		return nil
	}
	if err := bus.WriteFileAtomic(path, out, 0o600); err != nil {
		return fmt.Errorf("profile: %w", err)
	}
	s.log.Info("kojictl profile follows the hub's address", "profile", path, "server", s.profileURL)
	return nil
}
