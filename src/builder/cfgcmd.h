/* cfgcmd.h - capsem-builder's image config commands: validate, plan, inspect, new. */
#pragma once

/* Each takes argv[0] = the command's name and returns the process exit status. */
int cmd_validate(int argc, char **argv);
int cmd_plan(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_new(int argc, char **argv);
