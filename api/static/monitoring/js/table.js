// A table over a server-side paginated list (_lineStart/_lineCount), with Previous/Next.

import { total } from "./api.js";
import { h, replaceKeepingFocus } from "./dom.js";

export class PagedTable {
  /**
   * id: prefix of element ids; caption: the table's caption; columns: [{title, render(row)}];
   * fetchPage(start, count) -> a page {content, count, next}; empty: text when nothing matches.
   */
  constructor({ id, caption, columns, fetchPage, empty, pageSize = 25 }) {
    Object.assign(this, { id, caption, columns, fetchPage, empty, pageSize });
    this.start = 0;
    this.last = null;
    this.body = h("div", { class: "table-wrap" });
    this.pager = h("div", { class: "pager", role: "group", "aria-label": `${caption}: pages` });
    this.element = h("div", { id, class: "paged" }, this.body, this.pager);
  }

  /** Back to the first page (a filter changed); the caller refreshes. */
  reset() {
    this.start = 0;
    this.last = null;
  }

  async refresh() {
    const page = await this.fetchPage(this.start, this.pageSize);
    const rows = (page && page.content) || [];
    if (!rows.length && this.start > 0) {
      // The list shrank under the current page: show its new last page.
      this.start = Math.max(0, Math.floor((total(page) - 1) / this.pageSize) * this.pageSize);
      return this.refresh();
    }
    const signature = JSON.stringify([this.start, page]);
    if (signature === this.last) return; // nothing new: leave the DOM (and the focus) alone
    this.last = signature;
    // Past 10,000 lines beyond the page the server stops counting: `count` is then a floor.
    const exact = !page || page.countExact !== false;
    this.render(rows, total(page), Boolean(page && page.next), exact);
  }

  render(rows, count, hasNext, exact = true) {
    const head = h("tr", {}, this.columns.map((c) => h("th", { scope: "col" }, c.title)));
    const body = rows.length
      ? rows.map((row) => h("tr", {}, this.columns.map((c) => h("td", { "data-label": c.title }, c.render(row)))))
      : [h("tr", {}, h("td", { colspan: this.columns.length, class: "empty" }, this.empty || "Nothing to show."))];
    replaceKeepingFocus(
      this.body,
      h("table", {}, h("caption", {}, this.caption), h("thead", {}, head), h("tbody", {}, body)),
    );
    const first = rows.length ? this.start + 1 : 0;
    const shown = `Rows ${first}–${this.start + rows.length} of ${count}${exact ? "" : "+"}`;
    const previous = h(
      "button",
      {
        type: "button",
        "data-focus-key": `${this.id}-previous`,
        disabled: this.start === 0,
        onclick: () => this.move(-this.pageSize),
      },
      "Previous page",
    );
    const next = h(
      "button",
      {
        type: "button",
        "data-focus-key": `${this.id}-next`,
        disabled: !hasNext && this.start + rows.length >= count,
        onclick: () => this.move(this.pageSize),
      },
      "Next page",
    );
    replaceKeepingFocus(this.pager, previous, h("span", { class: "range" }, shown), next);
  }

  move(delta) {
    this.start = Math.max(0, this.start + delta);
    this.refresh().catch((error) => this.element.dispatchEvent(
      new CustomEvent("carillon:error", { bubbles: true, detail: error }),
    ));
  }
}
