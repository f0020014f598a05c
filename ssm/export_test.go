package ssm

// PausedProbeInterval exposes the probe interval to the black-box tests.
const PausedProbeInterval = pausedProbeInterval
