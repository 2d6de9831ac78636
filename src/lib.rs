//! Support code for the netns integration tests in `tests/`: topology builders that create network
//! namespaces, veth pairs and processes, and remove all of them again on drop.
