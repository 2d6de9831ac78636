use std::path::PathBuf;

/// Everything that can go wrong in the cluster control plane. Messages are written to be printed
/// as the single `error:` line of the CLI.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("store unreachable ({endpoints}): {reason}")]
    Unreachable { endpoints: String, reason: String },
    /// TLS with the store cannot work: a certificate expired, a key is not its certificate's,
    /// etcd wants a client certificate. Counted as unreachable (a running engine retries: the
    /// certificate may be renewed meanwhile).
    #[error("TLS with the store ({endpoints}) fails: {reason}")]
    Tls { endpoints: String, reason: String },
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error(
        "the store refused access: {0} (check --store-user and its password, and its etcd role)"
    )]
    StoreRefused(String),
    /// etcd's roles (see `roles`) do not let this node's user do this: the state dir's role is
    /// not what counts.
    #[error("the store denied this change: {0} (this node's etcd user may not make it, whatever its state dir says: networks and other nodes are the managers', rotating tokens and admitting nodes the store admin's)")]
    StoreDenied(String),
    #[error("invalid store address {0:?} (expected etcd://HOST:PORT[,HOST:PORT])")]
    BadEndpoint(String),
    #[error("malformed join token: {0}")]
    BadToken(String),
    #[error("join token refused: {0}")]
    TokenRefused(String),
    #[error("cluster {0} already exists in the store")]
    ClusterExists(String),
    #[error("no cluster {0} in the store")]
    NoCluster(String),
    #[error("node {0} is not a member of cluster {1} (join with a valid token first)")]
    NotMember(String, String),
    #[error("no cluster state in {0} (run `vxnet cluster init` or `vxnet cluster join TOKEN`)")]
    NotJoined(PathBuf),
    #[error("node {0} is live in the store (its `vxnet run` holds a lease); stop `vxnet run` on that host first")]
    NodeLive(String),
    #[error("node {node} is already registered by another running engine with VTEP {vtep} (a host cloned with its state dir?); not taking it over: stop that engine, or remove this host's state dir and join it with a token as a node of its own")]
    NodeInUse {
        node: String,
        vtep: std::net::IpAddr,
    },
    #[error("node {0} is the last manager of cluster {1}: the {2} other node(s) could no longer create networks or rotate tokens; join another host with the manager token first, or leave with --force")]
    LastManager(String, String, usize),
    #[error("no node {0} in cluster {1} (`vxnet cluster status` lists the node ids)")]
    NoSuchNode(String, String),
    #[error("node {0} was not admitted to cluster {1} within {2}s: in a store with authentication, a manager engine (`vxnet run`) holding the store's admin identity admits joining nodes; is one running?")]
    NotAdmitted(String, String, u64),
    #[error("state dir {0} already belongs to cluster {1}")]
    AlreadyJoined(PathBuf, String),
    #[error("this command needs a manager node (this node is a {0})")]
    NotManager(String),
    #[error("network name {0:?} is already taken")]
    NameTaken(String),
    #[error("VNI {0} is already taken by network {1:?}")]
    VniTaken(u32, String),
    #[error("no free VNI left")]
    VniExhausted,
    #[error("no network named {0:?}")]
    NoSuchNetwork(String),
    #[error("network {name:?} is still served by live member(s) {members}; use --force to remove it anyway")]
    NetworkInUse { name: String, members: String },
    #[error(
        "network {0} has no subnet, so it has no addresses to hand out (create it with --subnet)"
    )]
    NoSubnet(String),
    #[error("address {address} is not a host address of network {network}'s subnet {subnet}")]
    AddressOutsideSubnet {
        address: std::net::IpAddr,
        network: String,
        subnet: String,
    },
    #[error("address {address} in network {network} is taken by {owner}")]
    AddressTaken {
        address: std::net::IpAddr,
        network: String,
        owner: String,
    },
    #[error("no free address left in {subnet} (network {network})")]
    SubnetExhausted { network: String, subnet: String },
    #[error("name {name:?} is taken in network {network} (by an endpoint on node {node})")]
    EndpointNameTaken {
        name: String,
        network: String,
        node: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Record(#[from] crate::records::RecordError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt record {key}: {source}")]
    Corrupt {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether this error means the store could not be talked to (as opposed to a refusal).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Error::Unreachable { .. } | Error::Tls { .. } | Error::Etcd(_)
        )
    }
}
