// "My usage": today's quota, tokens per day and model, and the latest requests.

import { apiJson } from "../api.js";
import { onLanguageChange, t } from "../i18n.js";
import { fill, formatNumber, formatTime, h } from "./dom.js";

export function createUsageView() {
  const element = h("section", { class: "account-view usage-view" });
  let usage = null;
  let message = "";
  let unsubscribe = () => {};

  async function refresh() {
    try {
      usage = await apiJson("GET", "/api/usage?days=30&recent=50");
      message = "";
    } catch (error) {
      message = error.message;
    }
    render();
  }

  function quotaCard() {
    const quota = usage.quota;
    const limit = quota.user.tokens_per_day;
    return h(
      "div",
      { class: "account-card quota-card" },
      h("h2", {}, t("usage.today")),
      h(
        "p",
        { class: "tokens-today" },
        limit
          ? t("usage.tokensOfLimit", {
              used: formatNumber(quota.user_tokens_today),
              limit: formatNumber(limit),
            })
          : t("usage.tokensNoLimit", { used: formatNumber(quota.user_tokens_today) }),
      ),
      h(
        "p",
        {},
        quota.user.requests_per_minute
          ? t("usage.rpm", { limit: formatNumber(quota.user.requests_per_minute) })
          : t("usage.rpmNoLimit"),
      ),
      h("p", { class: "hint" }, t("usage.resets", { time: formatTime(quota.resets_at) })),
    );
  }

  function table(headers, rows) {
    return h(
      "table",
      { class: "account-table", tabindex: "0" }, // it scrolls sideways on a phone: reachable by keyboard
      h("thead", {}, h("tr", {}, ...headers.map((key) => h("th", {}, t(key))))),
      h("tbody", {}, ...rows.map((cells) => h("tr", {}, ...cells.map((cell) => h("td", {}, cell))))),
    );
  }

  function render() {
    if (!usage) {
      fill(element, h("h1", {}, t("nav.usage")), h("p", { class: "status error" }, message));
      return;
    }
    const totals = usage.totals;
    fill(
      element,
      h("h1", {}, t("nav.usage")),
      quotaCard(),
      h(
        "p",
        { class: "usage-totals" },
        t("usage.totals", {
          requests: formatNumber(totals.requests),
          prompt: formatNumber(totals.prompt_tokens),
          completion: formatNumber(totals.completion_tokens),
        }),
      ),
      h("h2", {}, t("usage.perDay")),
      usage.days.length
        ? table(
            ["usage.day", "usage.model", "usage.requests", "usage.prompt", "usage.completion"],
            usage.days.map((d) => [
              d.day,
              d.model,
              formatNumber(d.requests),
              formatNumber(d.prompt_tokens),
              formatNumber(d.completion_tokens),
            ]),
          )
        : h("p", { class: "empty-hint" }, t("usage.none")),
      h("h2", {}, t("usage.recent")),
      usage.recent.length
        ? table(
            ["usage.time", "usage.model", "usage.endpoint", "usage.prompt", "usage.completion", "usage.latency", "usage.status"],
            usage.recent.map((r) => [
              formatTime(r.created_at),
              r.model,
              r.endpoint,
              formatNumber(r.prompt_tokens),
              formatNumber(r.completion_tokens),
              `${formatNumber(r.latency_ms)} ms`,
              r.status,
            ]),
          )
        : h("p", { class: "empty-hint" }, t("usage.none")),
    );
  }

  return {
    element,
    mount() {
      render();
      refresh();
      unsubscribe = onLanguageChange(render);
    },
    unmount() {
      unsubscribe();
    },
  };
}
