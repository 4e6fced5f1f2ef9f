package bus

// Result shapes of builds, tagged builds, repos, repo requests and
// buildroots, field for field Koji's.

// Build states (koji.BUILD_STATES).
const (
	BuildBuilding = 0
	BuildComplete = 1
	BuildDeleted  = 2
	BuildFailed   = 3
	BuildCanceled = 4
)

// BuildStateNames are koji.BUILD_STATES' names, indexed by state.
var BuildStateNames = []string{"BUILDING", "COMPLETE", "DELETED", "FAILED", "CANCELED"}

// Build is getBuild's answer.
type Build struct {
	ID              int64          `json:"id"`
	BuildID         int64          `json:"build_id"`
	PackageID       int64          `json:"package_id"`
	PackageName     string         `json:"package_name"`
	Name            string         `json:"name"`
	Version         string         `json:"version"`
	Release         string         `json:"release"`
	Epoch           *int64         `json:"epoch"`
	NVR             string         `json:"nvr"`
	Draft           bool           `json:"draft"`
	State           int            `json:"state"`
	TaskID          *int64         `json:"task_id"`
	OwnerID         int64          `json:"owner_id"`
	OwnerName       string         `json:"owner_name"`
	VolumeID        int64          `json:"volume_id"`
	VolumeName      string         `json:"volume_name"`
	CreationEventID int64          `json:"creation_event_id"`
	CreationTime    string         `json:"creation_time"`
	CreationTS      float64        `json:"creation_ts"`
	StartTime       *string        `json:"start_time"`
	StartTS         *float64       `json:"start_ts"`
	CompletionTime  *string        `json:"completion_time"`
	CompletionTS    *float64       `json:"completion_ts"`
	PromotionTime   *string        `json:"promotion_time"`
	PromotionTS     *float64       `json:"promotion_ts"`
	PromoterID      *int64         `json:"promoter_id"`
	PromoterName    *string        `json:"promoter_name"`
	CGID            *int64         `json:"cg_id"`
	CGName          *string        `json:"cg_name"`
	Source          *string        `json:"source"`
	Extra           map[string]any `json:"extra"`
}

// TaggedBuild is listTagged's and getLatestBuilds' element: a build as a tag lists it.
type TaggedBuild struct {
	TagID           int64           `json:"tag_id"`
	TagName         string          `json:"tag_name"`
	ID              int64           `json:"id"`
	BuildID         int64           `json:"build_id"`
	Version         string          `json:"version"`
	Release         string          `json:"release"`
	Epoch           *int64          `json:"epoch"`
	State           int             `json:"state"`
	CompletionTime  *string         `json:"completion_time"`
	PromotionTime   *string         `json:"promotion_time"`
	StartTime       *string         `json:"start_time"`
	TaskID          *int64          `json:"task_id"`
	Draft           bool            `json:"draft"`
	OwnerID         int64           `json:"owner_id"`
	OwnerName       string          `json:"owner_name"`
	PromoterID      *int64          `json:"promoter_id"`
	PromoterName    *string         `json:"promoter_name"`
	CreationEventID int64           `json:"creation_event_id"`
	CreationTime    string          `json:"creation_time"`
	VolumeID        int64           `json:"volume_id"`
	VolumeName      string          `json:"volume_name"`
	PackageID       int64           `json:"package_id"`
	PackageName     string          `json:"package_name"`
	Name            string          `json:"name"`
	NVR             string          `json:"nvr"`
	CreateEvent     int64           `json:"create_event"`
	Extra           *map[string]any `json:"extra,omitempty"`
}

// Repo states (koji.REPO_STATES).
const (
	RepoInit    = 0
	RepoReady   = 1
	RepoExpired = 2
	RepoDeleted = 3
	RepoProblem = 4
)

// RepoStateNames are koji.REPO_STATES' names, indexed by state.
var RepoStateNames = []string{"INIT", "READY", "EXPIRED", "DELETED", "PROBLEM"}

// RepoStore is the Object Store holding generated repo content:
// "<tag_name>/<repo_id>/repo.json".
const RepoStore = "koji-repos"

// RepoOpts are a repo's options (Koji's repo opts).
type RepoOpts struct {
	Src         bool `json:"src"`
	Debuginfo   bool `json:"debuginfo"`
	SeparateSrc bool `json:"separate_src"`
	Maven       bool `json:"maven"`
}

// Repo is repoInfo's and repo.get's answer.
type Repo struct {
	ID           int64           `json:"id"`
	TagID        int64           `json:"tag_id"`
	TagName      string          `json:"tag_name"`
	CreateEvent  int64           `json:"create_event"`
	CreateTS     float64         `json:"create_ts"`
	State        int             `json:"state"`
	Dist         bool            `json:"dist"`
	TaskID       *int64          `json:"task_id"`
	TaskState    *int            `json:"task_state"`
	Opts         RepoOpts        `json:"opts"`
	CustomOpts   map[string]bool `json:"custom_opts"`
	CreationTime string          `json:"creation_time"`
	CreationTS   float64         `json:"creation_ts"`
	StateTime    string          `json:"state_time"`
	StateTS      float64         `json:"state_ts"`
	BeginEvent   *int64          `json:"begin_event"`
	BeginTS      *float64        `json:"begin_ts"`
	EndEvent     *int64          `json:"end_event"`
	EndTS        *float64        `json:"end_ts"`
}

// RepoRequest is a repo request (repo_queue row) as repo.request and
// repo.checkRequest return it.
type RepoRequest struct {
	ID         int64           `json:"id"`
	Active     bool            `json:"active"`
	AtEvent    *int64          `json:"at_event"`
	MinEvent   *int64          `json:"min_event"`
	Opts       map[string]bool `json:"opts"`
	Owner      int64           `json:"owner"`
	OwnerName  string          `json:"owner_name"`
	Priority   int64           `json:"priority"`
	RepoID     *int64          `json:"repo_id"`
	TagID      int64           `json:"tag_id"`
	TagName    string          `json:"tag_name"`
	TaskID     *int64          `json:"task_id"`
	TaskState  *int            `json:"task_state"`
	Tries      int64           `json:"tries"`
	CreateTime string          `json:"create_time"`
	CreateTS   float64         `json:"create_ts"`
	UpdateTime string          `json:"update_time"`
	UpdateTS   float64         `json:"update_ts"`
}

// RepoRequestResult is repo.request's answer.
type RepoRequestResult struct {
	Repo      *Repo        `json:"repo"`
	Request   *RepoRequest `json:"request"`
	Duplicate bool         `json:"duplicate"`
}

// RepoCheck is repo.checkRequest's answer.
type RepoCheck struct {
	Repo    *Repo        `json:"repo"`
	Request *RepoRequest `json:"request"`
}

// RepoContent is repo.json, the content snapshot of a generated repo: the
// latest tagged build of each package and the comps groups, as of Event.
type RepoContent struct {
	RepoID int64         `json:"repo_id"`
	Tag    string        `json:"tag"`
	TagID  int64         `json:"tag_id"`
	Event  int64         `json:"event"`
	Opts   RepoOpts      `json:"opts"`
	Builds []TaggedBuild `json:"builds"`
	Groups []TagGroup    `json:"groups"`
}

// Buildroot states and types (koji.BR_STATES, koji.BR_TYPES).
const (
	BuildrootInit     = 0
	BuildrootWaiting  = 1
	BuildrootBuilding = 2
	BuildrootExpired  = 3

	BuildrootTypeStandard = 0
	BuildrootTypeExternal = 1
)

// BuildrootStateNames are koji.BR_STATES' names, indexed by state.
var BuildrootStateNames = []string{"INIT", "WAITING", "BUILDING", "EXPIRED"}

// Buildroot is getBuildroot's and listBuildroots' element.
type Buildroot struct {
	ID                  int64          `json:"id"`
	BRType              int            `json:"br_type"`
	CGID                *int64         `json:"cg_id"`
	CGName              *string        `json:"cg_name"`
	CGVersion           *string        `json:"cg_version"`
	ContainerArch       string         `json:"container_arch"`
	Arch                string         `json:"arch"`
	ContainerType       string         `json:"container_type"`
	HostOS              *string        `json:"host_os"`
	HostArch            *string        `json:"host_arch"`
	Extra               map[string]any `json:"extra"`
	State               int            `json:"state"`
	TaskID              *int64         `json:"task_id"`
	HostID              int64          `json:"host_id"`
	HostName            string         `json:"host_name"`
	RepoID              int64          `json:"repo_id"`
	RepoState           int            `json:"repo_state"`
	TagID               int64          `json:"tag_id"`
	TagName             string         `json:"tag_name"`
	CreateEventID       int64          `json:"create_event_id"`
	CreateEventTime     string         `json:"create_event_time"`
	CreateTS            float64        `json:"create_ts"`
	RetireEventID       *int64         `json:"retire_event_id"`
	RetireEventTime     *string        `json:"retire_event_time"`
	RetireTS            *float64       `json:"retire_ts"`
	RepoCreateEventID   int64          `json:"repo_create_event_id"`
	RepoCreateEventTime string         `json:"repo_create_event_time"`
}
