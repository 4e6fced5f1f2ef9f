package bus

import "strings"

// CanonArch is koji.canonArch for the arches builders report: the
// canonical arch a family of them builds for.
func CanonArch(a string) string {
	switch {
	case a == "i386" || a == "i486" || a == "i586" || a == "i686" || a == "athlon" || a == "geode":
		return "i386"
	case a == "amd64" || a == "ia32e":
		return "x86_64"
	case strings.HasPrefix(a, "armv5") || strings.HasPrefix(a, "armv6") || strings.HasPrefix(a, "armv7"):
		return "arm"
	case a == "ppc64iseries" || a == "ppc64pseries":
		return "ppc64"
	}
	return a
}

// Is32Bit says whether a canonical arch runs with the 32-bit personality
// on a 64-bit host (what mock's setarch does for it).
func Is32Bit(canon string) bool {
	switch canon {
	case "i386", "arm", "ppc", "s390":
		return true
	}
	return false
}
