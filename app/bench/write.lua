-- wrk script: POST /api/v1/contributions with a unique ref per request, with the project's
-- admin token (a manual credit needs it).
-- Arguments (after --): run id, project, handles (comma-separated), admin token.
local threads = {}
local counter, run_id, project, handles, tid, headers = 0, "", "", {}, 0, {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  run_id, project = args[1], args[2]
  for handle in string.gmatch(args[3], "[^,]+") do table.insert(handles, handle) end
  headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. args[4]}
end

function request()
  counter = counter + 1
  local handle = handles[(counter % #handles) + 1]
  local body = string.format(
    '{"handle":"%s","project":"%s","kind":"commit","ref":"%s-%d-%d"}',
    handle, project, run_id, tid, counter)
  return wrk.format("POST", "/api/v1/contributions", headers, body)
end
