"""Prompt building: (role, task, payload) -> the text a model reads.

Templates are Jinja2 files shipped in `sparklio/services/llm/prompts/`; a folder named by
PROMPTS_DIR overrides any of them by file name. A role/task uses `<role>/<task>.j2` when it
exists and `generic.j2` otherwise; both extend `base.j2`, which includes the role's
instruction from `<role>/role.j2` (or the generic `role.j2`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import orjson

from sparklio.exceptions import ConfigError, InvalidRequestError

GENERIC_TEMPLATE = "generic.j2"
REPAIR_TEMPLATE = "repair.j2"


@dataclass(frozen=True, slots=True)
class RenderedPrompt:
    """A rendered prompt with the name of its template and a short hash of its text."""

    text: str
    template: str
    hash: str


def _dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()


class PromptBuilder:
    """Renders prompts from templates; templates are compiled once and reused."""

    def __init__(self, prompts_dir: Path | None = None) -> None:
        loaders: list[jinja2.BaseLoader] = [
            jinja2.PackageLoader("sparklio.services.llm", "prompts")
        ]
        if prompts_dir is not None:
            if not prompts_dir.is_dir():
                raise ConfigError(
                    f"PROMPTS_DIR={prompts_dir} is not a folder. Point it at a folder of .j2 "
                    "templates, or unset it to use the shipped prompts."
                )
            loaders.insert(0, jinja2.FileSystemLoader(prompts_dir))
        self.env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders),
            autoescape=False,  # prompts are plain text, not HTML
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
        )
        self._templates: dict[tuple[str, str], jinja2.Template] = {}
        self._roles: dict[str, str] = {}
        try:
            self.env.get_template(GENERIC_TEMPLATE)
        except jinja2.TemplateError as exc:
            raise ConfigError(
                f"Prompt template {GENERIC_TEMPLATE} cannot be loaded: {exc}"
            ) from exc

    def template_for(self, role: str, task: str) -> jinja2.Template:
        """The template for (role, task): its own if there is one, else the generic one."""
        key = (role, task)
        template = self._templates.get(key)
        if template is None:
            template = self.env.select_template([f"{role}/{task}.j2", GENERIC_TEMPLATE])
            self._templates[key] = template
        return template

    def role_instruction(self, role: str) -> str:
        """The role's instruction from `<role>/role.j2` (or `role.j2`), rendered once.

        It is a variable rather than an `{% include %}`: an include costs a template lookup
        and a new context on every call.
        """
        text = self._roles.get(role)
        if text is None:
            template = self.env.select_template([f"{role}/role.j2", "role.j2"])
            text = self._roles[role] = template.render(role=role).strip()
        return text

    def render(
        self,
        role: str,
        task: str,
        payload: dict[str, Any],
        mode: str,
        schema: dict[str, Any] | None,
    ) -> RenderedPrompt:
        """The prompt for one call. `role` and `task` must already be validated names."""
        template = self.template_for(role, task)
        try:
            text = template.render(
                role=role,
                role_instruction=self.role_instruction(role),
                task=task,
                mode=mode,
                payload=payload,
                payload_json=_dumps(payload),
                schema=schema,
                schema_json=_dumps(schema) if schema else "",
            ).strip()
        except jinja2.UndefinedError as exc:
            raise InvalidRequestError(
                f"The payload lacks a value that prompt template {template.name} uses: {exc}. "
                "Add it to the payload.",
                details={"template": template.name},
            ) from None
        except jinja2.TemplateError as exc:
            raise ConfigError(f"Prompt template {template.name} failed to render: {exc}") from exc
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        return RenderedPrompt(text=text, template=template.name or GENERIC_TEMPLATE, hash=digest)

    def render_repair(self, prompt: RenderedPrompt, answer: str, problems: str) -> RenderedPrompt:
        """The prompt for one repair attempt: the original, the answer and what is wrong."""
        template = self.env.get_template(REPAIR_TEMPLATE)
        text = template.render(prompt=prompt.text, answer=answer, problems=problems).strip()
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        return RenderedPrompt(text=text, template=REPAIR_TEMPLATE, hash=digest)
