--[[
job_submit.lua: turn the placement the SPANK plugin put into the job control
environment (QOS_* variables, see qos_plugin/slurm/placement.py) into the job's
time limit, nodes and comment. Jobs without a placement pass untouched; a malformed
placement is refused with a line the user sees. Node-local tiers are prepared by the
node Prolog/Epilog on each of the job's nodes (qos_plugin/slurm/staging.py).
--]]

local NO_VAL = 4294967294

local function placement(job_desc)
	local env = {}
	local t = job_desc.spank_job_env
	if t == nil then
		return nil
	end
	-- indexed from 0; spank_job_env_size gives the count
	local n = job_desc.spank_job_env_size or 0
	for i = 0, n - 1 do
		local kv = t[i]
		if kv ~= nil then
			local k, v = string.match(kv, "^(QOS_[A-Z0-9_]+)=(.*)$")
			if k ~= nil then
				env[k] = v
			end
		end
	end
	if env.QOS_ID == nil then
		return nil
	end
	return env
end

local function refuse(msg)
	slurm.log_user("qos: %s", msg)
	return slurm.ERROR
end

-- "a=x,b=y" -> {a="x", b="y"} (in order: list of names too)
local function pairs_of(text)
	local out, names = {}, {}
	for item in string.gmatch(text or "", "[^,]+") do
		local k, v = string.match(item, "^([^=]+)=(.*)$")
		if k == nil then
			return nil
		end
		out[k] = v
		table.insert(names, k)
	end
	return out, names
end

function slurm_job_submit(job_desc, part_list, submit_uid)
	local q = placement(job_desc)
	if q == nil then
		return slurm.SUCCESS
	end
	-- Every array task would get the same placement and the same directories.
	if job_desc.array_inx ~= nil and job_desc.array_inx ~= "" then
		return refuse("job arrays cannot use --qos-* options yet; submit the tasks as "
			.. "separate jobs")
	end
	if not string.match(q.QOS_ID, "^q" .. string.rep("[0-9a-f]", 12) .. "$") then
		return refuse("malformed placement id '" .. q.QOS_ID .. "'; submit again with --qos-* options")
	end
	local nodes = tonumber(q.QOS_NODES or "")
	local makespan = tonumber(q.QOS_MAKESPAN or "")
	if nodes == nil or nodes < 1 or nodes ~= math.floor(nodes) or makespan == nil
			or makespan ~= makespan or makespan < 0 or makespan > 1e9 then
		return refuse("malformed placement (QOS_NODES='" .. tostring(q.QOS_NODES)
			.. "', QOS_MAKESPAN='" .. tostring(q.QOS_MAKESPAN) .. "'); submit again")
	end
	local dirs, tiers = pairs_of(q.QOS_DIRS)
	if dirs == nil or #tiers == 0 then
		return refuse("malformed placement directories '" .. tostring(q.QOS_DIRS) .. "'; submit again")
	end

	-- Time limit: the deadline, unless the user asked for less.
	if q.QOS_DEADLINE ~= nil then
		local secs = tonumber(q.QOS_DEADLINE)
		if secs == nil or secs <= 0 then
			return refuse("malformed deadline '" .. q.QOS_DEADLINE .. "'; use Slurm time syntax")
		end
		local minutes = math.ceil(secs / 60)
		if job_desc.time_limit == nil or job_desc.time_limit == NO_VAL
				or job_desc.time_limit > minutes then
			job_desc.time_limit = minutes
		end
	end
	-- A time limit shorter than the prediction kills the job before it can finish.
	if job_desc.time_limit ~= nil and job_desc.time_limit ~= NO_VAL
			and job_desc.time_limit * 60 < makespan then
		slurm.log_user("qos: warning: --time=%d min is below the predicted makespan of %d s; "
			.. "the job will likely be killed before it ends (give --time of at least %d min)",
			job_desc.time_limit, math.floor(makespan + 0.5), math.ceil(makespan / 60))
	end

	-- Nodes: what the placement was planned for.
	if job_desc.min_nodes ~= nil and job_desc.min_nodes ~= NO_VAL and job_desc.min_nodes ~= nodes then
		slurm.log_user("qos: the placement uses %d node(s); the job's node count is set to it", nodes)
	end
	job_desc.min_nodes = nodes
	job_desc.max_nodes = nodes
	-- -N alone asks one CPU per node: with fewer nodes, that count could no longer be
	-- placed (Reason=PartitionConfig). Keep explicit task counts; drop the implied one.
	if job_desc.num_tasks == nil or job_desc.num_tasks == NO_VAL then
		job_desc.min_cpus = nodes
	end

	local note = string.format("qos %s: %s region %s (%s), predicted %ds",
		q.QOS_ID, q.QOS_WORKFLOW or "?", q.QOS_REGION or "?", q.QOS_RULE or "",
		math.floor(makespan + 0.5))
	if job_desc.comment ~= nil and job_desc.comment ~= "" then
		note = job_desc.comment .. " | " .. note
	end
	job_desc.comment = note

	return slurm.SUCCESS
end

function slurm_job_modify(job_desc, job_rec, part_list, modify_uid)
	return slurm.SUCCESS
end

return slurm.SUCCESS
