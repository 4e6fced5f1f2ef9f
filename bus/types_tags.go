package bus

// Result shapes of the tag side of the API: tags, inheritance, build
// targets, groups and package lists, field for field Koji's.

// Tag is getTag's answer.
type Tag struct {
	ID              int64          `json:"id"`
	Name            string         `json:"name"`
	PermID          *int64         `json:"perm_id"`
	Perm            *string        `json:"perm"`
	Arches          *string        `json:"arches"`
	Locked          bool           `json:"locked"`
	MavenSupport    bool           `json:"maven_support"`
	MavenIncludeAll bool           `json:"maven_include_all"`
	Extra           map[string]any `json:"extra"`
}

// BuildConfig is getBuildConfig's answer: a tag with the arches and extra
// it inherits (the kojibus field config_inheritance lists where each came from).
type BuildConfig struct {
	Tag
	ConfigInheritance ConfigInheritance `json:"config_inheritance"`
}

// ConfigInheritance says which tag each inherited setting came from (Koji's
// getBuildConfig: {"extra": {key: {"id", "name"}}, "arches": {"id", "name"}}).
type ConfigInheritance struct {
	Extra  map[string]TagRef `json:"extra"`
	Arches *TagRef           `json:"arches"`
}

// TagRef names a tag.
type TagRef struct {
	ID   int64  `json:"id"`
	Name string `json:"name"`
}

// InheritanceLink is an element of getInheritanceData: one parent of a tag.
type InheritanceLink struct {
	ParentID     int64  `json:"parent_id"`
	Name         string `json:"name"`
	Priority     int64  `json:"priority"`
	MaxDepth     *int64 `json:"maxdepth"`
	Intransitive bool   `json:"intransitive"`
	NoConfig     bool   `json:"noconfig"`
	PkgFilter    string `json:"pkg_filter"`
	ChildID      int64  `json:"child_id"`
}

// FullInheritanceLink is an element of getFullInheritance. Forward links
// carry child_id; reverse links (descendants) carry tag_id instead.
type FullInheritanceLink struct {
	ParentID     int64    `json:"parent_id"`
	Name         string   `json:"name"`
	Priority     int64    `json:"priority"`
	MaxDepth     *int64   `json:"maxdepth"`
	Intransitive bool     `json:"intransitive"`
	NoConfig     bool     `json:"noconfig"`
	PkgFilter    string   `json:"pkg_filter"`
	ChildID      *int64   `json:"child_id,omitempty"`
	TagID        *int64   `json:"tag_id,omitempty"`
	CurrDepth    int64    `json:"currdepth"`
	NextDepth    *int64   `json:"nextdepth"`
	Filter       []string `json:"filter"`
}

// BuildTarget is getBuildTarget's answer.
type BuildTarget struct {
	ID           int64  `json:"id"`
	Name         string `json:"name"`
	BuildTag     int64  `json:"build_tag"`
	BuildTagName string `json:"build_tag_name"`
	DestTag      int64  `json:"dest_tag"`
	DestTagName  string `json:"dest_tag_name"`
}

// TagGroup is an element of getTagGroups: a comps group as a tag sees it.
type TagGroup struct {
	GroupID     int64             `json:"group_id"`
	Name        string            `json:"name"`
	TagID       int64             `json:"tag_id"`
	Blocked     bool              `json:"blocked"`
	Exported    bool              `json:"exported"`
	DisplayName string            `json:"display_name"`
	IsDefault   *bool             `json:"is_default"`
	UserVisible bool              `json:"uservisible"`
	Description *string           `json:"description"`
	LangOnly    *string           `json:"langonly"`
	BiarchOnly  bool              `json:"biarchonly"`
	PackageList []TagGroupPackage `json:"packagelist"`
	GroupList   []TagGroupReq     `json:"grouplist"`
}

// TagGroupPackage is a package of a group (getTagGroups' packagelist).
type TagGroupPackage struct {
	GroupID      int64   `json:"group_id"`
	TagID        int64   `json:"tag_id"`
	Package      string  `json:"package"`
	Blocked      bool    `json:"blocked"`
	Type         string  `json:"type"`
	BaseArchOnly *bool   `json:"basearchonly"`
	Requires     *string `json:"requires"`
}

// TagGroupReq is a group required by a group (getTagGroups' grouplist).
type TagGroupReq struct {
	GroupID   int64  `json:"group_id"`
	TagID     int64  `json:"tag_id"`
	ReqID     int64  `json:"req_id"`
	Name      string `json:"name"`
	Blocked   bool   `json:"blocked"`
	Type      string `json:"type"`
	IsMetapkg bool   `json:"is_metapkg"`
}

// Package is getPackage's answer.
type Package struct {
	ID   int64  `json:"id"`
	Name string `json:"name"`
}

// TagPackage is an element of listPackages: a package as a tag's package list has it.
type TagPackage struct {
	PackageID   int64   `json:"package_id"`
	PackageName string  `json:"package_name"`
	TagID       int64   `json:"tag_id"`
	TagName     string  `json:"tag_name"`
	ExtraArches *string `json:"extra_arches"`
	Blocked     bool    `json:"blocked"`
	OwnerID     *int64  `json:"owner_id,omitempty"`
	OwnerName   *string `json:"owner_name,omitempty"`
}
