-- schema.sql - the session ledger, schema version 4 (docs/LEDGER.md documents every column).
--
-- One database per VM session: $CAPSEM_HOME/sessions/<vm-id>-<boot>.db, written by that VM's
-- capsem-vm only (one writer thread, batched transactions, WAL). Compiled into the ledger
-- library (meson turns this file into a C string) and applied once, when user_version is 0.
--
-- Every event table shares one id space: ids are assigned by the writer in the order the events
-- were recorded, so "everything after id N" is one question across tables. Times are integer
-- milliseconds since the Unix epoch (UTC). Booleans are 0/1. NULL means "not known".
-- The CHECKs repeat what the library validates before a row is queued.

CREATE TABLE session (
	id INTEGER PRIMARY KEY,
	vm_id TEXT,
	vm_name TEXT,
	boot INTEGER CHECK (boot IS NULL OR boot >= 1),
	started INTEGER NOT NULL,
	ended INTEGER,
	version TEXT NOT NULL,
	image TEXT,
	pid INTEGER
);

CREATE TABLE exec (
	id INTEGER PRIMARY KEY,
	ts INTEGER NOT NULL,
	ts_end INTEGER,
	exec_id TEXT,
	via TEXT CHECK (via IS NULL OR via IN ('cli', 'api', 'mcp', 'file')),
	argv TEXT CHECK (argv IS NULL OR json_valid(argv)),
	argv_truncated INTEGER NOT NULL DEFAULT 0 CHECK (argv_truncated IN (0, 1)),
	shell INTEGER NOT NULL DEFAULT 0 CHECK (shell IN (0, 1)),
	cwd TEXT,
	tty INTEGER NOT NULL DEFAULT 0 CHECK (tty IN (0, 1)),
	pid INTEGER,
	exit_code INTEGER,
	signal INTEGER,
	timed_out INTEGER NOT NULL DEFAULT 0 CHECK (timed_out IN (0, 1)),
	oom_killed INTEGER NOT NULL DEFAULT 0 CHECK (oom_killed IN (0, 1)),
	duration_ms INTEGER,
	cpu_user_ms INTEGER,
	cpu_sys_ms INTEGER,
	maxrss_kb INTEGER,
	stdin_bytes INTEGER,
	stdout_bytes INTEGER,
	stderr_bytes INTEGER,
	error TEXT
);

-- An exec row is written when the command starts and completed when it ends: the completion
-- finds it by exec_id (and moves it to a new id, so that "everything after id N" sees it again).
CREATE UNIQUE INDEX exec_by_exec_id ON exec (exec_id);

CREATE TABLE net (
	id INTEGER PRIMARY KEY,
	ts INTEGER NOT NULL,
	duration_ms INTEGER,
	request_id TEXT,
	pid INTEGER,
	comm TEXT,
	dst_ip TEXT,
	dst_port INTEGER CHECK (dst_port IS NULL OR dst_port BETWEEN 0 AND 65535),
	host TEXT,
	scheme TEXT CHECK (scheme IS NULL OR scheme IN ('https', 'http', 'tls', 'tcp')),
	method TEXT,
	path TEXT,
	status INTEGER,
	bytes_up INTEGER,
	bytes_down INTEGER,
	decision TEXT NOT NULL CHECK (decision IN ('allow', 'block')),
	rule TEXT,
	error TEXT
);

CREATE TABLE dns (
	id INTEGER PRIMARY KEY,
	ts INTEGER NOT NULL,
	qname TEXT NOT NULL,
	qtype TEXT,
	rcode INTEGER,
	answer TEXT,
	decision TEXT CHECK (decision IS NULL OR decision IN ('allow', 'block')),
	rule TEXT
);

CREATE TABLE model_call (
	id INTEGER PRIMARY KEY,
	ts INTEGER NOT NULL,
	duration_ms INTEGER,
	ttfb_ms INTEGER,
	request_id TEXT,
	provider TEXT,
	model TEXT,
	input_tokens INTEGER,
	output_tokens INTEGER,
	cache_read_tokens INTEGER,
	cache_write_tokens INTEGER,
	tool_calls INTEGER,
	tool_names TEXT CHECK (tool_names IS NULL OR json_valid(tool_names)),
	stop_reason TEXT,
	streamed INTEGER NOT NULL DEFAULT 0 CHECK (streamed IN (0, 1)),
	cost_usd REAL
);

CREATE TABLE tool_call (
	id INTEGER PRIMARY KEY,
	ts INTEGER NOT NULL,
	duration_ms INTEGER,
	server TEXT,
	tool TEXT,
	args_bytes INTEGER,
	result_bytes INTEGER,
	decision TEXT NOT NULL CHECK (decision IN ('allow', 'block')),
	rule TEXT,
	error TEXT
);

CREATE TABLE policy (
	id INTEGER PRIMARY KEY,
	ts INTEGER NOT NULL,
	boundary TEXT NOT NULL CHECK (boundary IN ('dns', 'conn', 'http', 'tool')),
	subject TEXT,
	action TEXT NOT NULL CHECK (action IN ('allow', 'block')),
	rule TEXT,
	layer TEXT,
	request_id TEXT
);

-- A change to a file of the workspace (the host's file audit): paths relative to the workspace.
CREATE TABLE fs (
	id INTEGER PRIMARY KEY,
	ts INTEGER NOT NULL,
	action TEXT NOT NULL CHECK (action IN ('created', 'modified', 'deleted', 'renamed', 'summary')),
	path TEXT NOT NULL,
	old_path TEXT,
	type TEXT CHECK (type IS NULL OR type IN ('file', 'dir', 'symlink', 'other')),
	size INTEGER,
	count INTEGER,
	detail TEXT,
	source TEXT CHECK (source IS NULL OR source IN ('watch', 'scan'))
);

CREATE TABLE dropped (
	id INTEGER PRIMARY KEY,
	ts INTEGER NOT NULL,
	count INTEGER NOT NULL CHECK (count >= 1),
	reason TEXT NOT NULL CHECK (reason IN ('queue_full', 'write_error'))
);
