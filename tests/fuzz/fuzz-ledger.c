/* fuzz-ledger.c - the session ledger's JSON events (the control-socket command capsem-vm takes
 * from the daemon), the one-line summaries (of any event a ledger file may hold) and session
 * ids, on arbitrary bytes. An accepted event must still be accepted after its round trip
 * through a control line; a summary is one NUL-terminated line. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ledger.h"
#include "query.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char id[LEDGER_SESSION_ID_MAX + 8], vm[65], sum[96];
	unsigned boot;
	size_t n = size < sizeof(id) - 1 ? size : sizeof(id) - 1;
	memcpy(id, data, n);
	id[n] = 0;
	if (ledger_session_id_parse(id, vm, &boot) == 0 &&
	    (strchr(vm, '/') || boot == 0 || boot > 999999 || vm[0] == '.'))
		__builtin_trap();

	json_t *ev = json_loadb((const char *)data, size, JSON_ALLOW_NUL, NULL);
	if (!ev)
		return 0;
	ledger_event_summary(ev, sum, sizeof(sum));
	if (strnlen(sum, sizeof(sum)) >= sizeof(sum))
		__builtin_trap();
	for (const char *p = sum; *p; p++)
		if ((unsigned char)*p < 0x20)
			__builtin_trap();
	if (ledger_check_json(ev) == 0) {
		char *line = NULL;
		size_t len;
		if (ledger_event_line(ev, 1u << 20, &line, &len) == 0) {
			json_t *cmd = json_loadb(line, len, 0, NULL);
			if (!cmd || ledger_check_json(json_object_get(cmd, "event")) != 0)
				__builtin_trap();
			json_decref(cmd);
			free(line);
		}
	}
	json_decref(ev);
	return 0;
}
