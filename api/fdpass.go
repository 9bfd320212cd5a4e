package api

// A sandbox's network namespace travels from the client to the agent as an open file
// descriptor (SCM_RIGHTS) attached to the first bytes of the request. The agent then
// needs no access to the namespace's path, which may live in a mount namespace it
// cannot see (podman's netns files, an agent running in a container). The server side
// is internal/fdpass.
