"""The writing templates as named prompts: GET /v1/templates, POST /v1/templates/{name}.

    POST /v1/templates/translate
    {"variables": {"text": "Hello", "languages": "fr,de"}, "model": "…", "max_tokens": 200}
    -> {"object": "template.result", "template": "translate", "model": "…",
        "outputs": [{"label": "French", "text": "Bonjour"}, {"label": "German", "text": "Hallo"}],
        "usage": {"prompt_tokens": …, "completion_tokens": …, "total_tokens": …}}

Errors are in OpenAI's shape, like every route. Posters (promo's image output) are made by the
chat commands; through the API, ask /v1/images/generations with the prompt it returns.
"""
from __future__ import annotations

from aiohttp import web

from bots.api.app_util import caller_id, result_of
from bots.api.keys import ENGINE
from bots.api.validate import limited_int, read_json, string
from engine.errors import BadRequest
from engine.flows import templates as T
from engine.jobs import ChatJob, ChatResult, Origin


async def list_templates(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [t.public() for t in T.TEMPLATES.values()]})


async def run_template(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    template = T.get(request.match_info["name"])
    body = await read_json(request)
    variables = body.get("variables", {})
    if not isinstance(variables, dict):
        raise BadRequest("'variables' must be an object of slot name -> value.", param="variables")
    checked = template.check({k: v if isinstance(v, str) else str(v) for k, v in variables.items()},
                             engine.settings.max_prompt_chars)
    parts = template.build(checked)
    max_tokens = limited_int(body, ("max_completion_tokens", "max_tokens"), engine.settings.max_tokens)
    origin = Origin(platform="api", user=caller_id(request))
    model = string(body, "model", "") or ""
    default_tokens = min(template.max_tokens, engine.settings.max_tokens)
    outputs, prompt_tokens, completion_tokens, used_model, job_ids = [], 0, 0, model, []
    for part in parts:
        handle = await engine.submit(ChatJob(model=model, origin=origin, messages=part.messages,
                                             max_tokens=max_tokens or default_tokens))
        job_ids.append(handle.id)
        result: ChatResult = await result_of(handle)
        outputs.append({"label": part.label, "text": result.text.strip()})
        prompt_tokens += result.usage.prompt_tokens
        completion_tokens += result.usage.completion_tokens
        used_model = result.model
    data = {"object": "template.result", "template": template.name, "model": used_model,
            "outputs": outputs, "usage": {"prompt_tokens": prompt_tokens,
                                          "completion_tokens": completion_tokens,
                                          "total_tokens": prompt_tokens + completion_tokens}}
    if template.name == "promo" and checked["output"] in ("image", "both"):
        data["image_prompt"] = T.promo_poster_prompt(checked)
    # one job per output: their ids, in order, as a list header
    return web.json_response(data, headers={"X-Confab-Job-Id": ", ".join(job_ids)})


def setup(app: web.Application) -> None:
    app.router.add_get("/v1/templates", list_templates)
    app.router.add_post("/v1/templates/{name}", run_template)
