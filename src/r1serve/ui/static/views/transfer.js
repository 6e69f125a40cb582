// Export downloads and JSON import, for one conversation or all of the user's.

import { apiFetch } from "../api.js";
import { exportPath, importConversations } from "../conversations.js";
import { t } from "../i18n.js";

const EXTENSIONS = { json: "json", markdown: "md" };

/** The file name a Content-Disposition header gives, else fallback. */
export function fileNameFrom(disposition, fallback) {
  const header = String(disposition || "");
  const encoded = /filename\*\s*=\s*UTF-8''([^;]+)/i.exec(header);
  let name = null;
  if (encoded) {
    try {
      name = decodeURIComponent(encoded[1].trim());
    } catch {
      name = null;
    }
  }
  if (!name) {
    const plain = /filename\s*=\s*"?([^";]+)"?/i.exec(header);
    name = plain ? plain[1].trim() : null;
  }
  // Only a base name: the browser decides the folder, and a path would only confuse it.
  const base = name ? name.split(/[\\/]/).pop() : "";
  return base || fallback;
}

/** Download the export of one conversation (id) or of all (id null) as format. */
export async function downloadExport(id, format) {
  const response = await apiFetch("GET", exportPath(id, format));
  const blob = await response.blob();
  const fallback = `r1serve-${id ? "conversation" : "conversations"}.${EXTENSIONS[format]}`;
  const name = fileNameFrom(response.headers.get("Content-Disposition"), fallback);
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  link.hidden = true;
  document.body.append(link);
  link.click();
  link.remove();
  // The download has its own copy once it started; the URL is not needed after this task.
  window.setTimeout(() => URL.revokeObjectURL(url), 0);
}

/** Read a chosen file as a JSON export and import it; resolves to the imported ids. */
export async function importFile(file) {
  const text = await file.text();
  try {
    JSON.parse(text); // only to say clearly what is wrong; the server gets the text as it is
  } catch {
    throw new Error(t("history.importNotJson", { name: file.name }));
  }
  const result = await importConversations(text);
  return Array.isArray(result?.imported) ? result.imported : [];
}
