/* mcprelay.h - capsem-mcp-relay: the agent's MCP stdio server, relayed to the host gateway. */
#pragma once

/* capsem-mcp-relay [--port P] [--unix PATH] [--debug]. Returns the exit status. */
int mcprelay_main(int argc, char **argv);
