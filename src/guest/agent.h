/* agent.h - capsem-agent: the guest side of the control channel and the exec server. */
#pragma once

/* Entry point for the capsem-agent personality of capsem-guest. Returns the exit status. */
int agent_main(int argc, char **argv);
