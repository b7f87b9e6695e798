-- wrk script: send "Authorization: Bearer <token>", rotating among the tokens listed one per
-- line in the file named after "--" (wrk -s wrk_bearer.lua URL -- tokens.txt).
-- Used for the hello runs too, so both sides pay the same client cost.

local thread_count = 0

function setup(thread)
  thread:set("offset", thread_count) -- each thread starts at a different token
  thread_count = thread_count + 1
end

local tokens = {}
local next_index = 1

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then
      tokens[#tokens + 1] = line
    end
  end
  next_index = ((offset or 0) % #tokens) + 1
end

function request()
  local token = tokens[next_index]
  next_index = (next_index % #tokens) + 1
  return wrk.format("GET", wrk.path, { ["Authorization"] = "Bearer " .. token })
end
