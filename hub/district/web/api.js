// The district API through /shared/api.js (the hub dashboard's client too): the token pasted at
// login is kept in sessionStorage under the district's own key (gone when the tab closes); a file
// (XLSX) is fetched with the token, never by a bare link.
import { apiClient } from "/shared/api.js";

export { ApiError } from "/shared/api.js";
export const { api, auth, download, whenAuthLost } = apiClient("sipas.district.token");
