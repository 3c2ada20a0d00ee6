-- wrk script: GET /api/v1/balances/<handle>, rotating over the seeded handles.
-- Arguments (after --): handles (comma-separated).
local counter, handles = 0, {}

function init(args)
  for handle in string.gmatch(args[1], "[^,]+") do table.insert(handles, handle) end
end

function request()
  counter = counter + 1
  return wrk.format("GET", "/api/v1/balances/" .. handles[(counter % #handles) + 1])
end
