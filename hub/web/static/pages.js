// The pages and who sees them. The API enforces the roles; the menu only hides what a role cannot use.
import * as alerts from "./page_alerts.js";
import * as duty from "./page_duty.js";
import * as exclusions from "./page_exclusions.js";
import * as feed from "./page_feed.js";
import * as heatmap from "./page_heatmap.js";
import * as report from "./page_report.js";
import * as stats from "./page_stats.js";
import * as terminals from "./page_terminals.js";
import { READ_ALL, ROLES } from "./ui.js";

export const ANY = ROLES;

export const pages = {
  live: { roles: ANY, render: feed.render },
  stats: { roles: ANY, render: stats.render },
  heatmap: { roles: ANY, render: heatmap.render },
  alerts: { roles: READ_ALL, render: alerts.render },
  terminals: { roles: READ_ALL, render: terminals.render },
  // officials check in at their desk and scan the receipts they hand back; auditors write nothing
  duty: { roles: ["admin", "supervisor", "official"], render: duty.render },
  report: { roles: READ_ALL, render: report.render },
  exclusions: { roles: READ_ALL, render: exclusions.render },
};
